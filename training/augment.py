"""SimCLR's data augmentation (Chen et al. 2020, Sec. 3 and Appendix A), batched in torch.

One call turns a uint8 batch ``(B, 3, H, W)`` into one random *view* ``(B, 3, S, S)`` per image,
normalised with the encoder's mean and std. Two calls give the two views of the paper.

The recipe, per image:
  * random resized crop (area ``scale``, aspect ``ratio``) to ``S x S``, horizontal flip p=0.5,
    and an optional random rotation, all as one affine resampling (``grid_sample``);
  * colour jitter with strength ``s``: brightness, contrast, saturation ``0.8 s``, hue ``0.2 s``,
    applied with probability ``jitter_p`` = 0.8;
  * grayscale with probability ``gray_p`` = 0.2;
  * Gaussian blur (sigma 0.1-2.0, kernel 10% of S) with probability ``blur_p`` (0 for 32 px images,
    as the paper does for CIFAR-10). The kernel never spans less than +-2 sigma_max: at S = 24 the
    10% rule gives 3 taps, which cannot blur beyond sigma ~0.8 whatever sigma is drawn;
  * optionally (not in the paper) additive Gaussian noise with probability ``noise_p``.

Why batched and not per-image PIL transforms: on a 2-core CPU the per-image path costs as much as
the model; here the whole batch is a handful of vectorised ops, and on a GPU it runs there too.
Differences from torchvision, documented and deliberate: the four jitter operations run in one
random order per batch (torchvision draws one per image), and hue is rotated in YIQ space (a
linear 3x3 map per image) instead of an HSV round trip.

Randomness comes only from the ``torch.Generator`` passed in, so seeded runs are reproducible and a
resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# RGB <-> YIQ (NTSC): hue rotation is a rotation of the (I, Q) chroma plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
_LUMA = torch.tensor([0.299, 0.587, 0.114])
BLUR_SIGMA = (0.1, 2.0)  # the paper's range, in pixels of the view


def blur_radius(size: int) -> int:
    """Half-width of the blur kernel for ``size`` px views: the paper's 10% of the side, widened to
    +-2 sigma_max (4 px) where that is narrower, so a drawn sigma is the sigma applied."""
    radius = max(int(0.1 * size) // 2, math.ceil(2 * BLUR_SIGMA[1]))
    return min(radius, size - 1)  # reflect padding needs radius < size


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the SimCLR view distribution (defaults: the paper's, for 32 px inputs)."""

    input_size: int = 32
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_strength: float = 0.5
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    rotation_degrees: float = 0.0
    noise_p: float = 0.0
    noise_sigma: float = 0.08
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8, got {self.input_size}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        for name in ("hflip_p", "jitter_p", "gray_p", "blur_p", "noise_p"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability, got {value}")
        if self.jitter_strength < 0:
            raise ValueError(f"jitter_strength must be >= 0, got {self.jitter_strength}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values, std positive")


class SimCLRAugment(torch.nn.Module):
    """Draw one random SimCLR view of every image in a uint8 batch.

    Shapes: ``images`` ``(B, 3, H, W)`` uint8 (any device) -> ``(B, 3, S, S)`` float32, normalised.
    """

    def __init__(self, config: AugmentConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected a uint8 (B, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}"
            )
        batch = images.shape[0]
        device = images.device
        x = images.float().div_(255.0)
        x = self._crop_flip_rotate(x, self._uniform(batch, generator, device, 6))
        cfg = self.config
        if cfg.jitter_p > 0 and cfg.jitter_strength > 0:
            x = self._color_jitter(x, generator)
        if cfg.gray_p > 0:
            gray = self._bernoulli(batch, cfg.gray_p, generator, device)
            luma = (x * _LUMA.to(device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = torch.where(gray.view(-1, 1, 1, 1), luma.expand_as(x), x)
        if cfg.blur_p > 0:
            x = self._blur(x, generator)
        if cfg.noise_p > 0:
            x = self._noise(x, generator)
        return (x - self.mean) / self.std

    # -- random draws (all from the caller's generator, on the CPU, then moved) --------------------
    @staticmethod
    def _uniform(
        n: int, generator: torch.Generator, device: torch.device, cols: int = 1
    ) -> torch.Tensor:
        return torch.rand(n, cols, generator=generator).to(device)

    @staticmethod
    def _bernoulli(
        n: int, p: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).to(device)

    # -- geometry ----------------------------------------------------------------------------------
    def _crop_flip_rotate(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Random resized crop + flip + rotation as one affine map per image.

        ``theta`` maps output coordinates in [-1, 1] to input coordinates: a crop of relative width
        ``w`` and height ``h`` centred at ``(cx, cy)`` is ``x_in = w * x_out + cx``.
        """
        cfg = self.config
        batch = x.shape[0]
        _, _, height, width = x.shape
        lo, hi = cfg.scale
        area = lo + (hi - lo) * u[:, 0]
        log_lo, log_hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1]) * (height / width)
        # Relative crop sides (fractions of the image side); clamp like torchvision's fallback.
        w = torch.sqrt(area * aspect).clamp(max=1.0)
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (1 - w) * (2 * u[:, 2] - 1)
        cy = (1 - h) * (2 * u[:, 3] - 1)
        flip = torch.where(u[:, 4] < cfg.hflip_p, -1.0, 1.0)
        theta = torch.zeros(batch, 2, 3, device=x.device)
        if cfg.rotation_degrees > 0:
            angle = (2 * u[:, 5] - 1) * math.radians(cfg.rotation_degrees)
            cos, sin = torch.cos(angle), torch.sin(angle)
        else:
            cos, sin = torch.ones(batch, device=x.device), torch.zeros(batch, device=x.device)
        theta[:, 0, 0] = w * cos * flip
        theta[:, 0, 1] = -h * sin
        theta[:, 1, 0] = w * sin * flip
        theta[:, 1, 1] = h * cos
        theta[:, 0, 2] = cx
        theta[:, 1, 2] = cy
        size = cfg.input_size
        grid = F.affine_grid(theta, [batch, 3, size, size], align_corners=False)
        # Downscaling a large crop by more than 2x aliases; pre-shrink the whole image in that case.
        if min(height, width) > 2 * size:
            x = F.interpolate(
                x, size=(2 * size, 2 * size), mode="bilinear", antialias=True, align_corners=False
            )
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    # -- colour ------------------------------------------------------------------------------------
    def _color_jitter(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        batch, device = x.shape[0], x.device
        s = cfg.jitter_strength
        apply = self._bernoulli(batch, cfg.jitter_p, generator, device).view(-1, 1, 1, 1)
        u = self._uniform(batch, generator, device, 4)
        order = torch.randperm(4, generator=generator).tolist()
        strength = (0.8 * s, 0.8 * s, 0.8 * s)
        factors = [1 + strength[i] * (2 * u[:, i] - 1) for i in range(3)]
        hue = 0.2 * s * (2 * u[:, 3] - 1)
        out = x
        for op in order:
            if op == 0:
                out = (out * factors[0].view(-1, 1, 1, 1)).clamp_(0, 1)
            elif op == 1:
                luma = (out * _LUMA.to(device).view(1, 3, 1, 1)).sum(1, keepdim=True)
                mean = luma.mean(dim=(2, 3), keepdim=True)
                out = ((out - mean) * factors[1].view(-1, 1, 1, 1) + mean).clamp_(0, 1)
            elif op == 2:
                luma = (out * _LUMA.to(device).view(1, 3, 1, 1)).sum(1, keepdim=True)
                out = ((out - luma) * factors[2].view(-1, 1, 1, 1) + luma).clamp_(0, 1)
            else:
                out = self._rotate_hue(out, hue)
        return torch.where(apply, out, x)

    @staticmethod
    def _rotate_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
        """Shift hue by ``hue`` turns (in [-0.5, 0.5]) as a rotation of YIQ chroma. ``(B,3,H,W)``."""
        angle = hue * 2 * math.pi
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros(x.shape[0], 3, 3, device=x.device)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
        rot[:, 2, 1], rot[:, 2, 2] = sin, cos
        mat = _YIQ2RGB.to(x.device) @ rot @ _RGB2YIQ.to(x.device)  # (B, 3, 3)
        out = torch.einsum("bij,bjhw->bihw", mat, x)
        return out.clamp_(0, 1)

    # -- noise -------------------------------------------------------------------------------------
    def _noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Additive Gaussian noise, sigma uniform in (0, noise_sigma], on a ``noise_p`` share of images.

        Not in the paper: an extra option that makes near-duplicate search robust to sensor noise.
        """
        batch = x.shape[0]
        apply = self._bernoulli(batch, self.config.noise_p, generator, x.device)
        sigma = self.config.noise_sigma * self._uniform(batch, generator, x.device)[:, 0]
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        noisy = (x + noise * sigma.view(-1, 1, 1, 1)).clamp_(0, 1)
        return torch.where(apply.view(-1, 1, 1, 1), noisy, x)

    # -- blur --------------------------------------------------------------------------------------
    def _blur(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, channels, height, width = x.shape
        device = x.device
        apply = self._bernoulli(batch, self.config.blur_p, generator, device)
        sigma = (
            BLUR_SIGMA[0]
            + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * self._uniform(batch, generator, device)[:, 0]
        )
        radius = blur_radius(self.config.input_size)
        offsets = torch.arange(-radius, radius + 1, device=device, dtype=x.dtype)
        kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
        kernel = kernel.repeat_interleave(channels, dim=0)  # (B*C, K)
        flat = x.reshape(1, batch * channels, height, width)
        flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
        flat = F.conv2d(flat, kernel.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
        flat = F.conv2d(flat, kernel.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
        blurred = flat.view(batch, channels, height, width)
        return torch.where(apply.view(-1, 1, 1, 1), blurred, x)
