"""Image quality metrics on ``(B, 3, H, W)`` tensors in [0, 1]: PSNR and SSIM (Wang et al. 2004)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for [0, 1] images: ``(B,)``. Images are clipped to [0, 1] first."""
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean SSIM ``(B,)``: Gaussian window 11 / sigma 1.5, per channel, valid region."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(
            f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    channels = a.shape[1]
    window = min(window, a.shape[-1], a.shape[-2])
    coords = torch.arange(window, dtype=a.dtype, device=a.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    a, b = a.clamp(0, 1), b.clamp(0, 1)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return value.flatten(1).mean(1)
