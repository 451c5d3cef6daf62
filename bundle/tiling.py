"""Image-to-image models on images of any size, in overlapping tiles with bounded memory.

Shared by training (PyTorch) and serving (ONNX Runtime): the model is a callable on one
``(n, 3, h, w)`` float32 batch of tiles. An image no larger than ``max_tile`` in both directions
goes through whole. A larger one is cut into the fewest tiles of at most ``max_tile`` per side that
overlap by at least ``overlap`` pixels, all of one size (so they batch), and blended with weights
that ramp linearly across each overlap: no seams, and away from the overlaps each output pixel is
exactly the tile's. Memory is bounded by the tile size plus the output image.

``border`` mirrors the image outward by that many pixels before the model sees it and crops the
result back (a bundle's manifest may ask for it). It helps whole photos a little and costs small
images, because the network learned image edges from 32 px training images with zero padding
(``benchmarks/bench_denoise_border.py``); the shipped denoiser serves CIFAR-sized images, so
:data:`BORDER`, the default, is 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

TileFn = Callable[[np.ndarray], np.ndarray]
BORDER = 0  # mirrored margin for image-to-image models: off by default (see above)


class Cancelled(Exception):
    """The caller no longer wants the result (``apply_tiled(cancelled=...)``)."""


def _starts(length: int, max_tile: int, overlap: int) -> tuple[int, list[int]]:
    """Tile size and start offsets covering ``[0, length)`` with the given overlap."""
    if length <= max_tile:
        return length, [0]
    count = math.ceil((length - overlap) / (max_tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    if count == 1:
        return size, [0]
    step = (length - size) / (count - 1)
    return size, [round(i * step) for i in range(count)]


def plan_tiles(
    height: int, width: int, max_tile: int = 512, overlap: int = 32
) -> tuple[int, int, list[tuple[int, int]]]:
    """``(tile_h, tile_w, [(top, left), ...])`` for an image of ``height x width``."""
    if height < 1 or width < 1:
        raise ValueError(f"empty image {height}x{width}")
    if overlap < 0 or max_tile <= 2 * overlap:
        raise ValueError(
            f"need 0 <= overlap < max_tile / 2, got overlap {overlap}, tile {max_tile}"
        )
    tile_h, tops = _starts(height, max_tile, overlap)
    tile_w, lefts = _starts(width, max_tile, overlap)
    return tile_h, tile_w, [(t, left) for t in tops for left in lefts]


def _ramp(size: int, start: int, total: int, overlap: int) -> np.ndarray:
    """1-D blend weights for a tile at ``start``: ramps up/down over ``overlap`` except at image edges."""
    w = np.ones(size, dtype=np.float32)
    if overlap == 0:
        return w
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if start > 0:
        w[:overlap] = np.minimum(w[:overlap], ramp)
    if start + size < total:
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def apply_tiled(
    fn: TileFn,
    image: np.ndarray,
    max_tile: int = 512,
    overlap: int = 32,
    batch: int = 4,
    cancelled: Callable[[], bool] | None = None,
    border: int = 0,
) -> np.ndarray:
    """Run ``fn`` over ``image`` ``(3, H, W)`` float32 in tiles; returns ``(3, H, W)`` float32.

    ``fn`` maps ``(n, 3, h, w) -> (n, 3, h, w)``; it must be shift-equivariant away from borders
    (a fully convolutional network is) for the blend to agree with a whole-image pass.
    ``cancelled`` is asked before each group of tiles; when it says True the work stops with
    :class:`Cancelled` (a caller that went away should not keep a core busy for seconds).
    ``border`` > 0 mirrors that many pixels around the image first and crops them off the result.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {image.shape}")
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border:
        padded = np.pad(image, ((0, 0), (border, border), (border, border)), mode="reflect")
        # ``max_tile`` counts the image's own pixels: a 500 px image is not cut into four tiles
        # because its border took it past 512.
        out = apply_tiled(fn, padded, max_tile + 2 * border, overlap, batch, cancelled)
        return np.ascontiguousarray(out[:, border:-border, border:-border])
    _, height, width = image.shape
    tile_h, tile_w, origins = plan_tiles(height, width, max_tile, overlap)
    if len(origins) == 1:
        return np.asarray(fn(image[None].astype(np.float32, copy=False))[0], dtype=np.float32)
    total = np.zeros((3, height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    for group in _batches(origins, batch):
        if cancelled is not None and cancelled():
            raise Cancelled(f"stopped after some of {len(origins)} tiles: the caller went away")
        tiles = np.stack([image[:, t : t + tile_h, s : s + tile_w] for t, s in group])
        outputs = np.asarray(fn(tiles.astype(np.float32, copy=False)), dtype=np.float32)
        if outputs.shape != tiles.shape:
            raise ValueError(f"tile function returned {outputs.shape} for input {tiles.shape}")
        for (top, left), out in zip(group, outputs, strict=True):
            w = np.outer(_ramp(tile_h, top, height, overlap), _ramp(tile_w, left, width, overlap))
            total[:, top : top + tile_h, left : left + tile_w] += out * w
            weight[top : top + tile_h, left : left + tile_w] += w
    return total / weight
