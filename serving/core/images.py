"""Checked decoding of request images: byte and pixel limits before any decoding, format allow-list.

The pixels are produced by ``bundle.preprocess`` — the same function training and indexing use.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from simclr_search.bundle.decode import probe
from simclr_search.bundle.preprocess import (
    FORMAT_NAMES,
    ImageDecodeError,
    decode_full,
    decode_tiles,
)
from simclr_search.serving.core.errors import InvalidImage
from simclr_search.serving.core.photo_views import photo


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


def decode_for_model(data: bytes, size: int, limits: ImageLimits) -> np.ndarray:
    """Encoded bytes -> ``(T, size, size, 3)`` uint8, the squares whose pooled embeddings are the
    picture's vector (``bundle.preprocess.decode_tiles``), or :class:`InvalidImage` with a
    reason a person can act on."""
    return _checked(lambda: decode_tiles(data, size, limits.max_pixels), data, limits)


def decode_photo(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Encoded bytes -> ``(H, W, 3)`` uint8 at most ``photo_views.PHOTO_SIDE`` on the longer side
    (copy detection's analysis size), with the same checks."""
    return _checked(lambda: photo(data, limits.max_pixels), data, limits)


def decode_rgb(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Encoded bytes -> full-size ``(H, W, 3)`` uint8 (for the denoiser), with the same checks."""
    return _checked(lambda: decode_full(data, limits.max_pixels), data, limits)


def check_header(data: bytes, limits: ImageLimits) -> None:
    """The byte and pixel limits from the header alone, for a request that would otherwise wait in
    a queue (Denoise) before being refused."""
    _checked(lambda: probe(data, limits.max_pixels), data, limits)


def _checked(decode, data: bytes, limits: ImageLimits):
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        return decode()
    except ImageDecodeError as exc:
        raise InvalidImage(f"{exc} (accepted formats: {FORMAT_NAMES})") from exc


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
