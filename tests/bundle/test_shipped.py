"""The bundle the repository ships (``models/compact-cifar10``): intact, small, and it runs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.manifest import load_manifest
from bundle.preprocess import encoder_input
from bundle.runtime import Decoder, Encoder

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"


def test_shipped_bundle_is_intact_small_and_serves_whitened_h() -> None:
    manifest = load_manifest(SHIPPED)  # verifies every file's sha256
    total = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert total <= 20 * 1024 * 1024, f"{total} bytes"
    assert manifest.data["embedding"]["whitening"]["images"] == 10_000
    assert "edited-copy" in manifest.data["embedding"]["whitening"]["method"]
    assert manifest.data["files"]["denoiser"]["tiling"]["border"] == 0
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(3):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        payloads.append(buffer.getvalue())
    batch = encoder_input(payloads, manifest.input_size, manifest.mean, manifest.std)
    embeddings = Encoder(manifest, device="cpu", intra_threads=1)(batch)
    assert embeddings.shape == (3, 256) and np.isfinite(embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    images = Decoder(manifest, device="cpu", intra_threads=1)(embeddings)
    assert images.shape == (3, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
