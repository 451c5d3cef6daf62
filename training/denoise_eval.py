"""Denoising evaluation with the FFDNet protocol (``../shared/README.md``).

Clean images in [0, 255]; ``noisy = clean + N(0, sigma^2)`` per pixel and channel, not clipped, with a
fixed seed per (image, sigma) so every method sees the same noise; PSNR on the output clipped to
[0, 255], averaged over the set; SSIM (Gaussian window, per channel) beside it. A method is any
callable ``(noisy (H, W, 3) float32 on 0-255, sigma or None) -> (H, W, 3)`` on 0-255.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.bundle.tiling import BORDER
from simclr_search.training.image_metrics import ssim

Method = Callable[[np.ndarray, float | None], np.ndarray]


@dataclass(frozen=True)
class EvalImage:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8


def load_eval_set(source: str, limit: int = 0) -> list[EvalImage]:
    """Every image of a folder or archive at full size, RGB, sorted by name (first ``limit`` if > 0)."""
    images = []
    for record, data in sorted(iter_image_bytes(source), key=lambda item: item[0].uri):
        with Image.open(io.BytesIO(data)) as image:
            images.append(EvalImage(record.uri, np.asarray(image.convert("RGB")).copy()))
        if limit and len(images) >= limit:
            break
    if not images:
        raise ValueError(f"no images in {source}")
    return images


def noisy_copy(clean: np.ndarray, sigma: float, index: int, seed: int = 0) -> np.ndarray:
    """``clean + N(0, sigma^2)`` as float32 on 0-255, seeded by (seed, image index, sigma)."""
    rng = np.random.default_rng([seed, index, round(sigma * 100)])
    return (
        clean.astype(np.float32) + rng.standard_normal(clean.shape, dtype=np.float32) * sigma
    ).astype(np.float32)


def psnr_255(output: np.ndarray, clean: np.ndarray) -> float:
    err = np.clip(output.astype(np.float64), 0, 255) - clean.astype(np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean(err**2), 1e-12)))


def ssim_255(output: np.ndarray, clean: np.ndarray) -> float:
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.clip(a, 0, 255).astype(np.float32) / 255).permute(2, 0, 1)[None]

    return float(ssim(t(output), t(clean.astype(np.float32)))[0])


def evaluate_method(
    method: Method,
    images: list[EvalImage],
    sigma: float,
    known: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Mean PSNR / SSIM and seconds per image of ``method`` at ``sigma`` (told the level if ``known``)."""
    scores, structure, seconds = [], [], 0.0
    for index, image in enumerate(images):
        noisy = noisy_copy(image.pixels, sigma, index, seed)
        started = time.perf_counter()
        output = method(noisy, sigma if known else None)
        seconds += time.perf_counter() - started
        if output.shape != image.pixels.shape:
            raise ValueError(f"method returned shape {output.shape} for {image.pixels.shape}")
        scores.append(psnr_255(output, image.pixels))
        structure.append(ssim_255(output, image.pixels))
    return {
        "psnr": float(np.mean(scores)),
        "ssim": float(np.mean(structure)),
        "seconds_per_image": seconds / len(images),
        "images": len(images),
        "per_image": scores,
    }


def torch_method(
    model: torch.nn.Module, max_tile: int = 512, overlap: int = 32, border: int = BORDER
) -> Method:
    """A PyTorch denoiser (``training.models.denoiser.Denoiser``) as an evaluation method, tiled,
    with the served default mirrored border (``bundle.tiling.BORDER``) unless told."""
    from simclr_search.bundle.tiling import apply_tiled

    model = model.eval()

    def run(noisy: np.ndarray, sigma: float | None) -> np.ndarray:
        level = -1.0 if sigma is None else float(sigma)

        def tiles(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                x = torch.from_numpy(batch)
                return model(x, torch.full((len(batch),), level)).numpy()

        chw = np.ascontiguousarray(noisy.transpose(2, 0, 1) / 255.0, dtype=np.float32)
        out = apply_tiled(tiles, chw, max_tile, overlap, border=border)
        return np.clip(out, 0, 1).transpose(1, 2, 0) * 255.0

    return run
