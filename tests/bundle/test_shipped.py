"""The bundle the repository ships (``models/compact-cifar10``): intact, small, and it runs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.preprocess import encoder_input
from simclr_search.bundle.runtime import Decoder, Denoiser, Encoder
from simclr_search.training.denoise_eval import psnr_255

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


def test_shipped_denoiser_leaves_a_clean_smooth_photo_alone() -> None:
    """A clean image at camera resolution (smooth at the pixel scale) must come back as it was.

    Trained on 32 px thumbnails alone, the denoiser tinted everything farther than ~16 px from an
    edge by ~13 levels (24.6 dB out of this clean input); 2x2 mosaics with some noise-free inputs
    (``training.noise.mosaic``, ``--clean-p``) fixed it (57 dB).
    """
    rng = np.random.default_rng(0)
    low = torch.from_numpy(rng.uniform(40, 215, (1, 3, 8, 8)).astype(np.float32))
    smooth = F.interpolate(low, size=(128, 128), mode="bicubic", align_corners=False)
    image = smooth[0].permute(1, 2, 0).clamp(0, 255).round().numpy().astype(np.uint8)
    denoiser = Denoiser(load_manifest(SHIPPED), device="cpu", intra_threads=1)
    for sigma in (None, 0.0):
        out = denoiser.denoise_float(image.astype(np.float32), sigma)
        shift = np.abs((out - image).mean(axis=(0, 1))).max()
        assert shift < 0.5, f"colour shift of {shift:.2f} levels (sigma {sigma})"
        assert psnr_255(out, image) > 45.0, f"{psnr_255(out, image):.2f} dB (sigma {sigma})"
