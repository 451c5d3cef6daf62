"""Image bytes -> model input: defined once, used by training, indexing and queries alike.

``decode_square`` turns encoded bytes (decoded upright by :mod:`bundle.decode`) into
``size x size`` RGB uint8: the shorter side is resized to ``size`` (bicubic) and the centre is
cropped. Training decodes its library this way (the decoded-image cache, random crops of which the
encoder learns from); the encoder sees these pixels through :func:`encoder_input`, with the mean
and std that the bundle's manifest records.

What the server stores and searches with is a descriptor of the *whole* picture:
``decode_tiles`` cuts the resized picture into :func:`tile_count` squares spread evenly along its
longer side (one, the centre, for a square-ish picture; two for 4:3 to 2:1), and
:func:`pool_tiles` averages their embeddings and renormalises. So the sides of a landscape photo
count, without squashing it (the encoder learned undistorted crops). Pooling regional embeddings
into one global vector is R-MAC's aggregation (Tolias et al. 2016, "Particular object retrieval
with integral max-pooling of CNN activations"); which policy was chosen, measured, is in
docs/experiments.md. numpy and Pillow only: the server imports this without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from simclr_search.bundle.decode import (
    ALLOWED_FORMATS,
    FORMAT_NAMES,
    MAX_PIXELS,
    ImageDecodeError,
    decode_rgb,
    orientation_is_upright,
)

try:  # libjpeg-turbo without Pillow's per-image Python overhead: ~12 us vs ~95 us per 32 px JPEG
    import simplejpeg
except ImportError:  # optional: Pillow decodes everything, the same pixels, only slower
    simplejpeg = None

__all__ = [
    "ALLOWED_FORMATS",
    "DESCRIPTOR_POLICY",
    "FORMAT_NAMES",
    "MAX_PIXELS",
    "RESIZE_POLICY",
    "ImageDecodeError",
    "centre_square",
    "decode_full",
    "decode_square",
    "decode_tiles",
    "encoder_input",
    "fast_jpeg",
    "normalize",
    "pool_tiles",
    "shorter_side",
    "square_tiles",
    "tile_count",
]

#: The resize policy :func:`decode_square` implements, as the manifest names it.
RESIZE_POLICY = "shorter-side-bicubic-center-crop"
#: The stored descriptor's policy (:func:`decode_tiles` + :func:`pool_tiles`): part of the
#: embedding space a collection records, so a store built another way is refused, not mixed.
DESCRIPTOR_POLICY = "shorter-side-bicubic-square-tiles-mean"
#: Most squares one picture is cut into (a panorama wider than this many squares is sampled).
MAX_TILES = 4
#: How far past a whole number of squares the longer side may reach before another is cut.
TILE_SLACK = 0.15


def tile_count(width: int, height: int) -> int:
    """Squares that cover a ``width x height`` picture along its longer side: 1 up to an aspect
    ratio of 1.15, 2 up to 2.15, ... at most :data:`MAX_TILES`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"a picture needs positive sides, got {width}x{height}")
    ratio = max(width, height) / min(width, height)
    return min(MAX_TILES, max(1, math.ceil(ratio - TILE_SLACK)))


def shorter_side(image: Image.Image, size: int) -> Image.Image:
    """``image`` with its shorter side resized to ``size`` (bicubic; the aspect ratio kept)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    scale = size / min(image.size)
    new_w = max(size, round(image.size[0] * scale))
    new_h = max(size, round(image.size[1] * scale))
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0)
    return image


def centre_square(image: Image.Image, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8: the centre of :func:`shorter_side` (the encoder's training input)."""
    return _centre(np.asarray(shorter_side(image, size), dtype=np.uint8), size)


def _centre(pixels: np.ndarray, size: int) -> np.ndarray:
    top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
    return pixels[top : top + size, left : left + size]


def square_tiles(image: Image.Image, size: int) -> np.ndarray:
    """``image`` -> ``(T, size, size, 3)`` uint8: :func:`tile_count` squares of
    :func:`shorter_side` at evenly spaced offsets along the longer side, the first at its start
    and the last at its end (one square: the centre, :func:`centre_square`)."""
    pixels = np.asarray(shorter_side(image, size), dtype=np.uint8)
    new_h, new_w = pixels.shape[:2]
    count = tile_count(new_w, new_h)
    if count == 1:
        return _centre(pixels, size)[None]
    offsets = np.linspace(0, max(new_w, new_h) - size, count).round().astype(int)
    if new_w >= new_h:
        return np.stack([pixels[:size, o : o + size] for o in offsets])
    return np.stack([pixels[o : o + size, :size] for o in offsets])


def pool_tiles(vectors: np.ndarray, counts: Sequence[int], normalized: bool = True) -> np.ndarray:
    """``(sum(counts), D)`` tile embeddings -> ``(len(counts), D)``: each picture's ``counts[i]``
    consecutive rows averaged (and L2-normalised again when the embeddings are). A picture of one
    tile keeps its row bit for bit."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts <= 0).any() or counts.sum() != len(vectors):
        raise ValueError(f"{len(vectors)} rows do not split into tiles of {counts.tolist()}")
    if (counts == 1).all():
        return vectors
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pooled = np.add.reduceat(np.asarray(vectors, dtype=np.float32), starts, axis=0)
    pooled /= counts[:, None].astype(np.float32)
    if normalized:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled /= np.maximum(norms, 1e-12)
    single = counts == 1
    pooled[single] = vectors[starts[single]]
    return pooled


def fast_jpeg(data: bytes, max_pixels: int, size: int = 0) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 through simplejpeg, or None where Pillow must decide.

    Only baseline colour/grey JPEGs without EXIF (so upright) that need no DCT downscaling take
    this path; their pixels equal Pillow's (the same libjpeg-turbo, accurate DCT, fancy upsampling;
    tested). CMYK, scaled decodes, anything simplejpeg rejects (truncated, corrupt) go to Pillow,
    which gives the error message.
    """
    if simplejpeg is None or not data.startswith(b"\xff\xd8") or not orientation_is_upright(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if width * height > max_pixels:
        raise ImageDecodeError(f"{width}x{height} pixels is over the limit of {max_pixels}")
    if colorspace not in ("YCbCr", "Gray") or (size and min(width, height) >= 2 * size):
        return None
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None


def decode_full(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``data`` at its own size: ``(H, W, 3)`` uint8 RGB (for image-to-image models).

    Raises:
        ImageDecodeError: empty, truncated, unsupported or oversized images.
    """
    fast = fast_jpeg(data, max_pixels)
    if fast is not None:
        return fast
    return np.asarray(decode_rgb(data, max_pixels), dtype=np.uint8)


def _decoded(data: bytes, size: int, max_pixels: int) -> np.ndarray | Image.Image:
    """``data`` decoded for a model of input ``size``: already ``(size, size, 3)`` (a thumbnail
    library: nothing to resize), or a Pillow image (a big JPEG DCT-scaled toward ``size``)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    fast = fast_jpeg(data, max_pixels, size)
    if fast is not None and fast.shape[:2] == (size, size):
        return fast
    return Image.fromarray(fast) if fast is not None else decode_rgb(data, max_pixels, size)


def decode_square(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``data`` to a ``(size, size, 3)`` uint8 RGB array, its :func:`centre_square`.

    Raises:
        ImageDecodeError: empty, truncated, unsupported or oversized images.
    """
    image = _decoded(data, size, max_pixels)
    return image if isinstance(image, np.ndarray) else centre_square(image, size)


def decode_tiles(data: bytes, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``data`` to its :func:`square_tiles`, ``(T, size, size, 3)`` uint8.

    Raises:
        ImageDecodeError: empty, truncated, unsupported or oversized images.
    """
    image = _decoded(data, size, max_pixels)
    return image[None] if isinstance(image, np.ndarray) else square_tiles(image, size)


def normalize(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(B, S, S, 3)`` uint8 -> ``(B, 3, S, S)`` float32, scaled to [0, 1] then standardised."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (B, S, S, 3) uint8 images, got {images.dtype} {images.shape}")
    # (x / 255 - mean) / std == x * scale + bias: one cast-multiply straight into the NCHW output
    # and one in-place add (6x faster than four passes with temporaries; indexing is CPU-bound).
    std_ = np.asarray(std, dtype=np.float32)
    scale = (1.0 / (255.0 * std_)).reshape(1, 3, 1, 1)
    bias = (-np.asarray(mean, dtype=np.float32) / std_).reshape(1, 3, 1, 1)
    out = np.empty((images.shape[0], 3, *images.shape[1:3]), dtype=np.float32)
    np.multiply(images.transpose(0, 3, 1, 2), scale, out=out)
    out += bias
    return out


def encoder_input(
    payloads: list[bytes],
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Encoded images -> the encoder's ``(B, 3, size, size)`` float32 input."""
    return normalize(np.stack([decode_square(p, size, max_pixels) for p in payloads]), mean, std)
