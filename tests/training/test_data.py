"""Image libraries: folders, archives, class folders, corrupt and non-image files, the cache."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_search.bundle.preprocess import ImageDecodeError, decode_square
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.training.data.batches import BatchReader, steps_per_epoch
from simclr_search.training.data.library import build_library
from tests.conftest import cifar_archive, make_library


def _png_bytes(width: int, height: int, colour=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_folder_with_class_subfolders(image_library: Path, cache_dir: Path) -> None:
    lib = build_library(image_library, 32, cache_dir, workers=0, progress=False)
    assert len(lib) == 24
    assert lib.images.shape == (24, 32, 32, 3)
    assert lib.images.dtype == np.uint8
    assert lib.classes == ["circle", "square", "triangle"]
    assert lib.has_labels
    assert sorted(np.bincount(lib.labels).tolist()) == [8, 8, 8]
    assert {Path(u).suffix for u in lib.uris} == {".jpg", ".png", ".webp"}


def test_corrupt_and_non_image_files_are_skipped_and_reported(
    image_library: Path, cache_dir: Path
) -> None:
    (image_library / "circle" / "truncated.jpg").write_bytes(
        (image_library / "circle" / "000.jpg").read_bytes()[:60]
    )
    (image_library / "circle" / "text.png").write_text("this is not an image")
    (image_library / "circle" / "empty.webp").write_bytes(b"")
    (image_library / "notes.txt").write_text("ignored: not an image extension")
    pdf = image_library / "square" / "scan.jpg"
    pdf.write_bytes(b"%PDF-1.4 not really an image")
    lib = build_library(image_library, 32, cache_dir, workers=2, progress=False)
    assert len(lib) == 24
    skipped = {Path(uri).name: reason for uri, reason in lib.skipped}
    assert set(skipped) == {"truncated.jpg", "text.png", "empty.webp", "scan.jpg"}
    assert "empty" in skipped["empty.webp"]
    assert "5 files skipped" not in lib.skipped_summary()
    assert lib.skipped_summary().startswith("4 files skipped")


def test_top_level_images_have_no_label(tmp_path: Path, cache_dir: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_png_bytes(20, 30))
    lib = build_library(tmp_path, 16, cache_dir, workers=0, progress=False)
    assert len(lib) == 3
    assert (lib.labels == -1).all()
    assert not lib.has_labels


def test_tar_gz_archive(tmp_path: Path, cache_dir: Path) -> None:
    folder = make_library(tmp_path / "src", per_class=2)
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="train")
    lib = build_library(archive, 32, cache_dir, workers=0, progress=False)
    assert len(lib) == 6
    assert lib.classes == ["circle", "square", "triangle"]
    assert all("::train/" in uri for uri in lib.uris)


def test_truncated_archive_keeps_what_was_readable(tmp_path: Path, cache_dir: Path) -> None:
    folder = make_library(tmp_path / "src", per_class=20, size=64)
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname="train")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    lib = build_library(archive, 16, cache_dir, workers=0, progress=False)
    assert 0 < len(lib) < 60
    assert any("archive" in reason for _, reason in lib.skipped)


def test_missing_and_empty_libraries_fail_clearly(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        build_library(tmp_path / "nope", 32, cache_dir, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable images"):
        build_library(tmp_path / "empty", 32, cache_dir, progress=False)


def test_cache_is_reused_and_invalidated_by_changes(image_library: Path, cache_dir: Path) -> None:
    first = build_library(image_library, 32, cache_dir, workers=0, progress=False)
    again = build_library(image_library, 32, cache_dir, workers=0, progress=False)
    assert np.array_equal(first.images, again.images)
    assert len(list(cache_dir.glob("decoded-*"))) == 1
    (image_library / "circle" / "new.png").write_bytes(_png_bytes(40, 40))
    changed = build_library(image_library, 32, cache_dir, workers=0, progress=False)
    assert len(changed) == 25
    assert len(list(cache_dir.glob("decoded-*"))) == 2
    assert not list(cache_dir.glob(".decoded-*")), "no staging folders left behind"


def test_decode_square_resizes_and_centre_crops() -> None:
    left_red_right_blue = Image.new("RGB", (300, 100), (255, 0, 0))
    left_red_right_blue.paste((0, 0, 255), (150, 0, 300, 100))
    out = decode_square(_to_png(left_red_right_blue), 50)
    assert out.shape == (50, 50, 3)
    assert out[25, 5, 0] > 200 and out[25, 45, 2] > 200  # centre crop keeps both halves


def _to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_decode_refuses_bombs_and_unknown_formats() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_square(b"", 32)
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        decode_square(b"GIF89a not quite", 32)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PCX")
    with pytest.raises(ImageDecodeError, match="format"):
        decode_square(buffer.getvalue(), 32)
    # A 1-bit PNG declaring 10000 x 10000 pixels: refused from its header, never decoded.
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")
    with pytest.raises(ImageDecodeError, match="pixels"):
        decode_square(buffer.getvalue(), 32)


def test_iter_image_bytes_reports_unreadable_archive(tmp_path: Path) -> None:
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not a gzip stream")
    skipped: list = []
    assert list(iter_image_bytes(tmp_path, skipped)) == []
    assert skipped and "archive" in skipped[0][1]


def test_batch_reader_covers_each_epoch_once_per_rank_split(
    image_library: Path, cache_dir: Path
) -> None:
    lib = build_library(image_library, 16, cache_dir, workers=0, progress=False)
    single = BatchReader(lib, batch_size=8, seed=3)
    assert single.steps_per_epoch == 3
    seen = np.concatenate([single.indices(s) for s in range(3)])
    assert sorted(seen.tolist()) == list(range(24))
    ranks = [BatchReader(lib, batch_size=4, seed=3, rank=r, world=2) for r in range(2)]
    for step in range(3):
        merged = np.concatenate([r.indices(step) for r in ranks])
        assert np.array_equal(merged, single.indices(step))
    assert not np.array_equal(single.indices(0), single.indices(3)), "each epoch reshuffles"
    batch = single.read(1)
    assert batch.shape == (8, 3, 16, 16)
    expected = np.asarray(lib.images[single.indices(1)]).transpose(0, 3, 1, 2)
    assert np.array_equal(batch.numpy(), expected)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        steps_per_epoch(10, 8, world=2)


@pytest.mark.slow
def test_cifar_archive_decodes_with_labels(cache_dir: Path) -> None:
    lib = build_library(cifar_archive("test"), 32, cache_dir, workers=2, progress=False)
    assert len(lib) == 10_000
    assert len(lib.classes) == 10
    assert lib.skipped == []
