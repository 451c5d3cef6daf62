"""Export: the bundle round trip, parity with PyTorch on real images, refusals, and INT8 agreement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_search.bundle.manifest import BundleError, load_manifest
from simclr_search.bundle.preprocess import encoder_input
from simclr_search.bundle.runtime import Encoder
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.training.checkpoint import load_checkpoint
from simclr_search.training.data.library import build_library
from simclr_search.training.models.simclr import model_from_checkpoint


@pytest.fixture
def trained(tiny_run: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_run


@pytest.fixture
def bundle(tiny_bundle: tuple[Path, Path]) -> Path:
    return tiny_bundle[0]


def _payloads(library: Path) -> list[bytes]:
    return [data for _, data in iter_image_bytes(library)]


def test_round_trip_matches_pytorch_on_real_images(
    trained: tuple[Path, Path], bundle: Path
) -> None:
    checkpoint, library = trained
    manifest = load_manifest(bundle)
    assert manifest.input_size == 32 and manifest.embedding_dim == 64 and manifest.normalized
    assert manifest.data["opset"] >= 17
    assert manifest.data["training"]["step"] == 9
    encoder = Encoder(manifest, device="cpu")
    batch = encoder_input(_payloads(library), manifest.input_size, manifest.mean, manifest.std)
    got = encoder(batch)
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            model.forward_features(torch.from_numpy(batch)), dim=1
        ).numpy()
    assert got.shape == (48, 64)
    assert np.abs(got - expected).max() <= 1e-4
    assert ((got * expected).sum(1)).min() >= 0.99999
    for size in (1, 7):  # dynamic batch axis
        assert encoder(batch[:size]).shape == (size, 64)


def test_serving_preprocessing_equals_training_pixels(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    _, library = trained
    lib = build_library(library, 32, tmp_path, workers=0, progress=False)
    payloads = {str(record.uri): data for record, data in iter_image_bytes(library)}
    served = encoder_input([payloads[lib.uris[0]]], 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(
        served[0].transpose(1, 2, 0) * 255, np.asarray(lib.images[0]), atol=1e-3
    )


def test_int8_encoder_agrees_on_neighbour_order(trained: tuple[Path, Path], bundle: Path) -> None:
    """INT8 keeps each embedding's direction and its neighbours. The tiny fixture model's first and
    second neighbours differ by a few thousandths of a cosine, so exact top-1 identity would measure
    rounding noise (it moved between ONNX Runtime releases); the fp32 neighbour must stay among the
    INT8 top 5 instead."""
    _, library = trained
    manifest = load_manifest(bundle)
    batch = encoder_input(_payloads(library), manifest.input_size, manifest.mean, manifest.std)
    fp32 = Encoder(manifest, device="cpu")(batch)
    int8 = Encoder(manifest, int8=True, device="cpu")(batch)
    cosine = (fp32 * int8).sum(1)
    assert cosine.min() >= 0.97 and cosine.mean() >= 0.99

    def similarities(e: np.ndarray) -> np.ndarray:
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return sim

    nearest = similarities(fp32).argmax(1)
    top5 = np.argsort(-similarities(int8), axis=1)[:, :5]
    kept = float(np.mean([nearest[i] in top5[i] for i in range(len(nearest))]))
    print(f"INT8 vs fp32: min cosine {cosine.min():.4f}, fp32 neighbour in INT8 top 5 {kept:.3f}")
    assert kept >= 0.85


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_refuses_missing_file(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    (copy / "encoder.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder_int8 file 'encoder.int8.onnx' is missing"):
        load_manifest(copy)


def test_refuses_wrong_checksum(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    data = bytearray((copy / "encoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for encoder\.onnx"):
        load_manifest(copy)


def test_refuses_unknown_format_version(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    _edit_manifest(copy, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        load_manifest(copy)


def test_refuses_inconsistent_shapes(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    _edit_manifest(copy, lambda d: d["preprocessing"].update(input_size=64))
    with pytest.raises(
        BundleError, match=r"input shape .* does not match the manifest's \(batch, 3, 64, 64\)"
    ):
        Encoder(load_manifest(copy), device="cpu")
    copy2 = tmp_path / "copy2"
    shutil.copytree(bundle, copy2)
    _edit_manifest(copy2, lambda d: d["embedding"].update(dim=128))
    with pytest.raises(BundleError, match="embedding dim 128"):
        Encoder(load_manifest(copy2), device="cpu")


def test_refuses_non_bundles(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest.json is missing"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_encoder_only_bundle_is_valid(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    (copy / "encoder.int8.onnx").unlink()
    _edit_manifest(copy, lambda d: d["files"].pop("encoder_int8"))
    manifest = load_manifest(copy)
    assert manifest.has("encoder") and not manifest.has("encoder_int8")
    with pytest.raises(BundleError, match="has no decoder"):
        manifest.path("decoder")


def test_the_typed_manifest_round_trips(bundle: Path, tmp_path: Path) -> None:
    """A written manifest read back as a BundleSpec and written again says the same (the shipped
    bundle's too), so the typed object loses nothing the export wrote."""
    from simclr_search.bundle.manifest import BundleSpec, write_manifest

    shipped = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"
    for folder in (bundle, shipped):
        data = load_manifest(folder).data
        copy = tmp_path / folder.name
        shutil.copytree(folder, copy)
        write_manifest(copy, BundleSpec.from_dict(data))
        assert load_manifest(copy).data == data
