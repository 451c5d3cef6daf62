"""Encoders f(.) of SimCLR: image batch ``(B, 3, S, S)`` -> representation h ``(B, D)``.

Each encoder exposes ``forward_features`` (h, the representation that is served, Chen et al. 2020
Sec. 4.2: h beats z by >10% on linear evaluation) and ``num_features`` (D). No encoder moves itself
to a device: the caller does.

* ``resnet18`` / ``resnet34`` / ``resnet50``: torchvision's ResNets (random init, no downloads) with
  the classifier removed. ``small_stem=True`` swaps the 7x7/2 conv + max-pool for a 3x3/1 conv, the
  usual change for 32 px images (SimCLR Appendix B.9).
* ``compact``: a small residual ConvNet (about 1.2 M parameters, 70 MFLOPs at 32 px) sized so that
  2 CPU cores train it through tens of CIFAR-10 epochs in half an hour (``benchmarks/bench_quality.py``).
  Its 3x3 convolutions take their weight gradient as one GEMM on small CPU feature maps
  (``im2col_conv.py``), where oneDNN's bf16 kernel is slow (``benchmarks/bench_conv_grad.py``).
"""

from __future__ import annotations

import itertools

import torch
import torchvision
from torch import nn

from simclr_search.training.models.im2col_conv import Im2colConv2d

ENCODERS = ("compact", "resnet18", "resnet34", "resnet50")


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its classifier."""

    def __init__(self, depth: int, small_stem: bool) -> None:
        super().__init__()
        builders = {
            18: torchvision.models.resnet18,
            34: torchvision.models.resnet34,
            50: torchvision.models.resnet50,
        }
        if depth not in builders:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(builders)}")
        net = builders[depth](weights=None)
        if small_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        self.num_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        Im2colConv2d(cin, cout, stride),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _ResidualStage(nn.Module):
    """Strided 3x3 conv (downsample) then one residual pair of 3x3 convs at the new resolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = _conv_bn(cin, cout, stride=2)
        self.conv1 = _conv_bn(cout, cout)
        self.conv2 = nn.Sequential(Im2colConv2d(cout, cout), nn.BatchNorm2d(cout))
        nn.init.zeros_(
            self.conv2[1].weight
        )  # residual branch starts as identity (Goyal et al. 2017)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.act(x + self.conv2(self.conv1(x)))


class CompactEncoder(nn.Module):
    """Stem at full resolution, then three stages each halving resolution and doubling width.

    Shapes (32 px input, widths (32, 64, 128, 256)): ``(B,3,32,32)`` -> stem ``(B,32,32,32)`` ->
    ``(B,64,16,16)`` -> ``(B,128,8,8)`` -> ``(B,256,4,4)`` -> global average pool -> h ``(B,256)``.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("widths needs a stem width and at least one stage width")
        self.stem = _conv_bn(3, widths[0])
        self.stages = nn.Sequential(*[_ResidualStage(a, b) for a, b in itertools.pairwise(widths)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def build_encoder(name: str, small_stem: bool = True, width: int = 32) -> nn.Module:
    """Build an encoder by name (see :data:`ENCODERS`).

    Args:
        name: ``compact`` or ``resnet18`` / ``resnet34`` / ``resnet50``.
        small_stem: ResNets only: 3x3 stride-1 stem without max-pool, for small (32-64 px) images.
        width: compact only: stem width; stage widths double from there.
    """
    if name == "compact":
        return CompactEncoder(tuple(width * 2**i for i in range(4)))
    if name.startswith("resnet") and name[6:].isdigit():
        return ResNetEncoder(int(name[6:]), small_stem)
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")
