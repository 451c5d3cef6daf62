"""Shared fixtures: small synthetic image libraries written to disk as real image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

# Keep the test suite predictable on 2 cores (and under pytest-xdist-like parallelism elsewhere).
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _shape_image(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    """An image whose class is a shape (circle, square, triangle) on a random background."""
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    r = int(size * rng.uniform(0.25, 0.4))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    if label == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif label == 1:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def make_library(root: Path, per_class: int = 8, size: int = 40, seed: int = 0) -> Path:
    """Write ``3 * per_class`` labelled images in class folders, mixing JPEG, PNG and WebP."""
    rng = np.random.default_rng(seed)
    formats = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")]
    for label, name in enumerate(["circle", "square", "triangle"]):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext, fmt = formats[i % len(formats)]
            _shape_image(rng, label, size).save(folder / f"{i:03d}.{ext}", fmt)
    return root


@pytest.fixture
def image_library(tmp_path: Path) -> Path:
    return make_library(tmp_path / "library")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def kodak_photos(count: int) -> list[bytes]:
    """The first ``count`` Kodak24 photos (PNG bytes) from ../shared, or skip saying why."""
    import tarfile

    path = SHARED / "denoise-eval" / "Kodak24.tar"
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/datasets)")
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        return [tar.extractfile(m).read() for m in members[:count]]


def cifar_archive(split: str) -> Path:
    path = SHARED / "cifar10-jpg" / f"{split}.tar.gz"
    if not path.exists():
        pytest.skip(f"{path} is not present (../shared/datasets is optional for tests)")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A compact encoder trained for 9 steps on a small library: ``(checkpoint, library)``."""
    from simclr_search.training.config import TrainConfig
    from simclr_search.training.train import run

    root = tmp_path_factory.mktemp("tiny-run")
    library = make_library(root / "library", per_class=16)
    run(
        TrainConfig(
            data=str(library),
            out_dir=str(root / "run"),
            cache_dir=str(root / "cache"),
            workers=0,
            width=8,
            batch_size=16,
            epochs=3,
            optimizer="adamw",
            lr=1e-3,
            lr_scaling="none",
            progress=False,
            tensorboard=False,
            precision="fp32",
        )
    )
    return root / "run" / "checkpoint.pt", library


@pytest.fixture(scope="session")
def tiny_bundle(
    tiny_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """``tiny_run``'s model exported as a bundle (with INT8): ``(bundle, library)``."""
    from simclr_search.training.export import ExportConfig, export_bundle

    checkpoint, library = tiny_run
    bundle = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    report = export_bundle(
        ExportConfig(str(checkpoint), str(bundle), str(library), int8=True, calibration_count=32)
    )
    assert report["encoder_parity"]["max_abs_diff"] <= 1e-4
    return bundle, library
