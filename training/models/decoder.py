"""Decoder: an embedding h back to an image, trained on a frozen encoder (our addition to SimCLR).

Shapes: ``h`` ``(B, D)`` (L2-normalised, as served) -> ``(B, 3, S, S)`` RGB in [0, 1], S the
encoder's input size. A linear layer makes a ``(C, S/8, S/8)`` map; three upsample + conv blocks
double it to ``S``; a 3x3 conv and a sigmoid give pixels. What it reconstructs shows what the
embedding keeps (colours, layout) and drops (SimCLR is trained to ignore crops, flips and colour
jitter, so reconstructions are blurry and desaturated by design).
"""

from __future__ import annotations

import torch
from torch import nn


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Decoder(nn.Module):
    """Args: ``embed_dim`` D; ``image_size`` S (a multiple of 8); ``width`` channels at S/8."""

    def __init__(self, embed_dim: int, image_size: int = 32, width: int = 256) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
        if embed_dim <= 0 or width < 8:
            raise ValueError("embed_dim must be positive and width at least 8")
        self.embed_dim, self.image_size, self.width = embed_dim, image_size, width
        self.base = image_size // 8
        self.fc = nn.Sequential(
            nn.Linear(embed_dim, width * self.base * self.base), nn.ReLU(inplace=True)
        )
        self.up = nn.Sequential(
            _up(width, width // 2), _up(width // 2, width // 4), _up(width // 4, width // 8)
        )
        self.out = nn.Conv2d(width // 8, 3, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            self.check_input(h)
        x = self.fc(h).view(-1, self.width, self.base, self.base)
        return torch.sigmoid(self.out(self.up(x)))

    def check_input(self, h: torch.Tensor) -> None:
        if h.dim() != 2 or h.shape[1] != self.embed_dim:
            raise ValueError(
                f"expected embeddings of shape (B, {self.embed_dim}), got {tuple(h.shape)}"
            )
        if h.shape[0] == 0:
            raise ValueError("empty batch: give at least one embedding")
