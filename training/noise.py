"""Synthetic noise for training the denoiser on the user's own (clean) images.

All functions take and return ``(B, 3, H, W)`` float tensors on the [0, 1] scale (``mosaic`` returns
fewer, larger images) and use an explicit ``torch.Generator`` so a seeded run draws the same noise. Noise is never clipped: the evaluation
protocol (FFDNet) feeds ``clean + N(0, sigma^2)`` unclipped, so training does too.

* Mosaic (the default, 2x2): images side by side, so some pixels lie far from any edge.
* Noise-free inputs (``corrupt``'s ``noise_free``): a clean photo must come back as it was.
* Gaussian (the main model): per-image sigma uniform in ``[0, max_sigma]`` on the 0-255 scale.
* Poisson (optional): shot noise at a per-image peak photon count (fewer photons, more noise).
* JPEG (optional): re-encode at a random quality with Pillow (compression artefacts as "noise").
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One of the 8 flips/rotations of the square, for the whole batch: free extra training data."""
    k = int(torch.randint(0, 8, (1,), generator=generator))
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def mosaic(clean: torch.Tensor, tiles: int) -> torch.Tensor:
    """Lay ``tiles x tiles`` images side by side: ``(B, 3, H, W)`` -> ``(B // tiles**2, 3, tiles*H, tiles*W)``.

    Why: on 32 px thumbnails every pixel is within 16 px of the zero-padded edge, so the network
    never learns how a pixel far from any edge behaves, and on clean photos it tinted everything
    more than ~16 px inside (docs/experiments.md). A mosaic gives interior pixels; its seams are
    just edges, in input and target alike. Leftover images (``B`` not a multiple of ``tiles**2``) are dropped.
    """
    if tiles < 1:
        raise ValueError(f"mosaic tiles must be >= 1, got {tiles}")
    if tiles == 1:
        return clean
    groups = clean.shape[0] // (tiles * tiles)
    if groups == 0:
        raise ValueError(f"a {tiles}x{tiles} mosaic needs at least {tiles * tiles} images")
    _, c, h, w = clean.shape
    grid = clean[: groups * tiles * tiles].reshape(groups, tiles, tiles, c, h, w)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(groups, c, tiles * h, tiles * w)


def gaussian(
    clean: torch.Tensor, max_sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(noisy, sigma)``: sigma ``(B,)`` on the 0-255 scale, uniform in [0, max_sigma]."""
    if max_sigma < 0:
        raise ValueError(f"max_sigma must be >= 0, got {max_sigma}")
    sigma = torch.rand(clean.shape[0], generator=generator) * max_sigma
    noise = torch.randn(clean.shape, generator=generator) * (sigma / 255.0).view(-1, 1, 1, 1)
    return clean + noise.to(clean.device), sigma


def poisson(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shot noise: ``Poisson(clean * peak) / peak`` with peak log-uniform in [10, 1000] per image."""
    peak = torch.exp(
        torch.empty(clean.shape[0]).uniform_(np.log(10.0), np.log(1000.0), generator=generator)
    ).view(-1, 1, 1, 1)
    return torch.poisson(clean.clamp(0, 1).cpu() * peak, generator=generator) / peak


def jpeg(clean: torch.Tensor, generator: torch.Generator, quality: tuple[int, int] = (10, 60)):
    """Re-encode each image as JPEG at a quality uniform in ``quality``."""
    out = torch.empty_like(clean)
    pixels = (clean.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i, image in enumerate(pixels):
        q = int(torch.randint(quality[0], quality[1] + 1, (1,), generator=generator))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=q)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out[i] = torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255.0
    return out


def corrupt(
    clean: torch.Tensor,
    generator: torch.Generator,
    max_sigma: float = 55.0,
    known_p: float = 0.5,
    poisson_p: float = 0.0,
    jpeg_p: float = 0.0,
    noise_free: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training pair's input: ``(noisy (B,3,H,W), sigma_input (B,))``.

    Each image gets Gaussian noise; a ``poisson_p`` / ``jpeg_p`` share gets Poisson / JPEG instead.
    ``sigma_input`` is the true Gaussian level with probability ``known_p`` and -1 ("unknown", the
    blind case) otherwise; it is always -1 for Poisson and JPEG, whose level is not a Gaussian sigma.
    Images marked in ``noise_free`` ``(B,)`` come back unchanged with level 0 (known or not).
    """
    for name, p in (("known_p", known_p), ("poisson_p", poisson_p), ("jpeg_p", jpeg_p)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    noisy, sigma = gaussian(clean, max_sigma, generator)
    shown = torch.where(torch.rand(len(sigma), generator=generator) < known_p, sigma, -1.0)
    kind = torch.rand(len(sigma), generator=generator)
    if poisson_p > 0 and (pick := kind < poisson_p).any():
        noisy[pick] = poisson(clean[pick], generator).to(noisy.dtype)
        shown[pick] = -1.0
    if jpeg_p > 0 and (pick := (kind >= poisson_p) & (kind < poisson_p + jpeg_p)).any():
        noisy[pick] = jpeg(clean[pick], generator)
        shown[pick] = -1.0
    if noise_free is not None and noise_free.any():
        noisy[noise_free] = clean[noise_free].to(noisy.dtype)
        shown[noise_free] = torch.where(shown[noise_free] >= 0, 0.0, -1.0)
    return noisy, shown
