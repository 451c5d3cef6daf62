"""Whitening: the fit against a hand-written reference, exact un-whitening, the library sample, and a
whitened bundle whose encoder, INT8 encoder and decoder agree with PyTorch."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.preprocess import encoder_input
from simclr_search.bundle.runtime import Decoder, Encoder
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.training.checkpoint import load_checkpoint
from simclr_search.training.models.simclr import model_from_checkpoint
from simclr_search.training.whitening import (
    RIDGE,
    Unwhiten,
    Whiten,
    fit_whitening,
    sample_embeddings,
)
from tests.conftest import make_library


def _unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors with very unequal variance per direction and a common offset, like SimCLR's h."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)) * np.geomspace(3.0, 0.01, dim) + 2.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference_gram(h: np.ndarray) -> np.ndarray:
    """Cosine similarities after whitening, from an SVD of the centred data (independent of eigh)."""
    centred = h - h.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variances = s**2 / (len(h) - 1)
    variances = variances + RIDGE * variances.mean()
    y = centred @ vt.T / np.sqrt(variances)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return y @ y.T


def test_fit_whitens_and_matches_a_hand_written_reference() -> None:
    h = _unit_rows(2000, 16)
    w = fit_whitening(h)
    y = w.apply(h)
    covariance = np.cov(y.T)
    # Unit variance in every principal direction, less what the ridge takes from the smallest.
    variances = np.linalg.eigvalsh(np.cov(h.T))
    expected = variances / (variances + RIDGE * variances.mean())
    np.testing.assert_allclose(np.linalg.eigvalsh(covariance), expected, rtol=1e-6)
    assert expected[-8:].min() > 0.98
    normed = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(normed @ normed.T, _reference_gram(h), atol=1e-8)


def test_learned_whitening_matches_a_hand_written_reference() -> None:
    h = _unit_rows(3000, 16, seed=4)
    rng = np.random.default_rng(5)
    # Edits move h mostly along the first two axes: those must end up counting least.
    moved = h + rng.standard_normal(h.shape) * np.r_[0.5, 0.5, np.full(14, 0.01)]
    edited = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    w = fit_whitening(h, edited)
    assert w.method == "learned" and "edited-copy" in w.describe()["method"]
    d = h - edited
    values, vectors = np.linalg.eigh(d.T @ d / len(d))
    values = values + RIDGE * values.mean()
    reference = vectors @ np.diag(values**-0.5) @ vectors.T
    np.testing.assert_allclose(w.projection, reference, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(w.projection @ w.inverse, np.eye(16), atol=1e-8)
    gain = np.linalg.norm(w.projection, axis=0)
    assert gain[:2].max() < gain[2:].min() / 5
    with pytest.raises(ValueError, match="edited copies"):
        fit_whitening(h, edited[:10])


def test_copy_edits_are_seeded_decodable_and_varied() -> None:
    from simclr_search.training.copy_edits import copy_edit

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), np.uint8)).save(
        buffer, "PNG"
    )
    data = buffer.getvalue()
    copies = [copy_edit(data, 32, np.random.default_rng(i)) for i in range(40)]
    assert copies == [copy_edit(data, 32, np.random.default_rng(i)) for i in range(40)]
    sizes = {Image.open(io.BytesIO(c)).size for c in copies}
    assert sizes == {(30, 40)}  # under 2 x 32 px: kept at its size
    assert len(set(copies)) > 30
    for fmt in ("PNG", "JPEG"):  # large photos are edited as thumbnails (JPEG decoded scaled)
        big = io.BytesIO()
        Image.new("RGB", (1000, 500), "red").save(big, fmt)
        edited = copy_edit(big.getvalue(), 32, np.random.default_rng(0))
        assert Image.open(io.BytesIO(edited)).size == (64, 32)
    with pytest.raises(ValueError, match="cannot decode"):
        copy_edit(b"not an image", 32, np.random.default_rng(0))


def test_torch_modules_whiten_and_invert_exactly_at_any_scale() -> None:
    h = _unit_rows(600, 12, seed=1)
    w = fit_whitening(h)
    served = Whiten(w)(torch.tensor(h, dtype=torch.float32))
    np.testing.assert_allclose(served.numpy(), w.apply(h), rtol=1e-4, atol=1e-4)
    unwhiten = Unwhiten(w)
    for scale in (1.0, 1 / served.norm(dim=1, keepdim=True), 7.5):
        back = unwhiten(served * scale).numpy()
        np.testing.assert_allclose(back, h, atol=1e-4)


@pytest.mark.parametrize(
    ("h", "message"),
    [
        (np.ones((5, 8)) / np.sqrt(8), "more than 8 images"),
        (np.ones(8), r"shape \(N, D\)"),
        (np.full((20, 4), np.nan), "finite"),
        (np.tile(np.eye(4)[:1], (20, 1)), "same direction"),
    ],
)
def test_bad_fits_are_refused(h: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_whitening(h)


def test_library_sample_is_bounded_seeded_and_skips_bad_files(tmp_path: Path) -> None:
    library = make_library(tmp_path / "lib", per_class=10, size=16)
    (library / "circle" / "broken.png").write_bytes(b"not an image")

    def embed(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1)[:, :4].copy()

    kwargs = {"size": 16, "mean": (0.5,) * 3, "std": (0.5,) * 3, "batch": 4, "progress": False}
    everything = sample_embeddings(embed, str(library), 100, **kwargs)
    assert everything.shape == (30, 4)  # 31 files, the broken one skipped
    few = sample_embeddings(embed, str(library), 7, seed=3, **kwargs)
    assert few.shape[0] <= 7 and few.shape[1] == 4
    np.testing.assert_array_equal(few, sample_embeddings(embed, str(library), 7, seed=3, **kwargs))
    # Every sampled row is one of the library's images, none repeated.
    rows = {tuple(r) for r in everything.tolist()}
    assert all(tuple(r) in rows for r in few.tolist()) and len({tuple(r) for r in few}) == len(few)
    pairs = sample_embeddings(
        embed, str(library), 100, edit=lambda data, rng: _mirrored(data), **kwargs
    )
    assert pairs.shape == (30, 2, 4)
    np.testing.assert_allclose(pairs[:, 0], everything)
    assert not np.allclose(pairs[:, 0], pairs[:, 1])


def _mirrored(data: bytes) -> bytes:
    """An edit keeps the contract of ``copy_edit``: ValueError for bytes that do not decode."""
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except OSError as exc:
        raise ValueError(str(exc)) from exc
    buffer = io.BytesIO()
    ImageOps.mirror(image).save(buffer, "PNG")
    return buffer.getvalue()


def test_small_library_keeps_plain_h(tiny_bundle: tuple[Path, Path]) -> None:
    manifest = load_manifest(tiny_bundle[0])  # 48 images for 64 dimensions: too few
    assert manifest.data["embedding"]["whitening"] is None
    assert "whitened" not in manifest.data["embedding"]["source"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pca", "learned"])
def test_whitened_bundle_serves_whitened_h_and_reconstructs_from_it(
    tiny_run: tuple[Path, Path], tmp_path: Path, method: str
) -> None:
    from simclr_search.training.decoder_train import DecoderTrainConfig, load_decoder, train_decoder
    from simclr_search.training.export import ExportConfig, export_bundle

    checkpoint, small = tiny_run
    library = make_library(tmp_path / "big", per_class=100, size=32, seed=5)  # 300 >= 4 x 64
    decoder = train_decoder(
        DecoderTrainConfig(
            str(checkpoint),
            str(small),
            str(tmp_path / "dec"),
            epochs=1,
            batch_size=16,
            width=16,
            device="cpu",
            precision="fp32",
            cache_dir=str(tmp_path / "c"),
            progress=False,
        )
    )["decoder"]
    bundle = tmp_path / "bundle"
    report = export_bundle(
        ExportConfig(
            str(checkpoint),
            str(bundle),
            str(library),
            int8=True,
            calibration_count=32,
            decoder=decoder,
            progress=False,
            whitening=method,
        )
    )
    assert report["decoder_parity"]["max_abs_diff"] <= 1e-4
    manifest = load_manifest(bundle)
    assert manifest.data["embedding"]["whitening"]["images"] == 300
    assert manifest.data["embedding"]["source"].endswith(f"whitened ({method})")

    payloads = [data for _, data in iter_image_bytes(library)]
    batch = encoder_input(payloads, manifest.input_size, manifest.mean, manifest.std)
    model = model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    with torch.no_grad():
        h = torch.nn.functional.normalize(model.forward_features(torch.from_numpy(batch)), dim=1)
    served = Encoder(manifest, device="cpu")(batch)
    assert served.shape == (300, 64)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    if method == "pca":
        reference = _reference_gram(h.double().numpy())
        np.testing.assert_allclose(served @ served.T, reference, atol=2e-3)
    else:
        assert "edited-copy" in manifest.data["embedding"]["whitening"]["method"]

    int8 = Encoder(manifest, int8=True, device="cpu")(batch)
    assert np.median((int8 * served).sum(1)) > 0.9

    # The decoder file takes what the encoder serves and draws what the decoder draws from h.
    torch_decoder, _ = load_decoder(decoder)
    with torch.no_grad():
        expected = torch_decoder(h[:8]).numpy()
    got = Decoder(manifest, device="cpu")(served[:8])
    np.testing.assert_allclose(got, expected, atol=2e-3)
