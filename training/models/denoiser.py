"""Denoiser: noisy image -> clean image, a U-Net (our addition beside SimCLR's encoder).

Shapes: ``noisy`` ``(B, 3, H, W)`` RGB on the [0, 1] scale (not clipped: Gaussian noise leaves it),
``sigma`` ``(B,)`` the noise standard deviation on the 0-255 scale or any negative value for "unknown"
(blind) -> ``(B, 3, H, W)``, unclipped. Any H, W >= 1: the input is edge-padded to a multiple of
``2 ** (levels - 1)`` and the output cropped back, so odd and tiny images work and the network is
fully convolutional (large images go through ``bundle.tiling`` in overlapping tiles).

Conditioning (FFDNet, Zhang et al. 2018, feeds a noise-level map): two constant planes join the
RGB input, the level ``sigma / 255`` and a "known" flag; training shows the level with probability
0.5, so one network works blind over sigma 0-55 and uses the level when the caller gives it.
The network predicts the noise and subtracts it (residual learning, DnCNN, Zhang et al. 2017).

The down path has the compact SimCLR encoder's shape (stem at full resolution, then stride-2
residual stages) but its own weights: contrastive features are trained to ignore the colour, noise
and exact pixels a denoiser must keep (docs/experiments.md). The up path: 2x2 transposed conv,
concatenate the skip, two 3x3 convs.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from simclr_search.training.models.encoders import _conv_bn, _ResidualStage

# CIFAR-10 statistics: a fixed input scaling, not tied to any data set at inference time.
DEFAULT_MEAN = (0.4914, 0.4822, 0.4465)
DEFAULT_STD = (0.2470, 0.2435, 0.2616)
CONDITION_CHANNELS = 2  # noise level plane, "level known" plane


class _Up(nn.Module):
    """``(B, cin, h, w)`` + skip ``(B, cout, 2h, 2w)`` -> ``(B, cout, 2h, 2w)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.act = nn.ReLU(inplace=True)
        self.fuse = nn.Sequential(_conv_bn(2 * cout, cout), _conv_bn(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.act(self.up(x)), skip], dim=1))


class Denoiser(nn.Module):
    """U-Net denoiser.

    Args:
        widths: channels per level, full resolution first; each further level halves H and W.
        mean, std: RGB input scaling (the compact encoder's, so encoder weights fit the stem).
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 4:
            raise ValueError(f"widths needs at least two levels of >= 4 channels, got {widths}")
        self.widths = widths
        self.multiple = 2 ** (len(widths) - 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = _conv_bn(3 + CONDITION_CHANNELS, widths[0])
        self.stages = nn.ModuleList(_ResidualStage(a, b) for a, b in itertools.pairwise(widths))
        self.ups = nn.ModuleList(_Up(b, a) for a, b in reversed(list(itertools.pairwise(widths))))
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # starts as the identity: predicted noise 0
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def check_input(noisy: torch.Tensor, sigma: torch.Tensor) -> None:
        if noisy.dim() != 4 or noisy.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(noisy.shape)}")
        if noisy.numel() == 0:
            raise ValueError(f"empty image batch {tuple(noisy.shape)}: give at least one pixel")
        if sigma.dim() != 1 or sigma.shape[0] != noisy.shape[0]:
            raise ValueError(
                f"expected one noise level per image, shape ({noisy.shape[0]},), got {tuple(sigma.shape)}"
            )

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            self.check_input(noisy, sigma)
        height, width = noisy.shape[-2], noisy.shape[-1]
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        x = F.pad(noisy, [0, pad_w, 0, pad_h], mode="replicate")
        sigma = sigma.to(x.dtype).view(-1, 1, 1, 1)
        ones = torch.ones_like(x[:, :1])
        known = (sigma >= 0).to(x.dtype)
        level = sigma.clamp(min=0) / 255.0
        feats = self.stem(torch.cat([(x - self.mean) / self.std, ones * level, ones * known], 1))
        skips = [feats]
        for stage in self.stages:
            feats = stage(feats)
            skips.append(feats)
        skips.pop()
        for up in self.ups:
            feats = up(feats, skips.pop())
        out = x - self.head(feats) * self.std
        return out[:, :, :height, :width]
