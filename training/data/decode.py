"""Decode encoded image bytes into a fixed-size square uint8 array.

Every image of a library is decoded once to ``size x size`` RGB (shorter side resized to ``size``,
centre crop) and cached; the random augmentations then run batched on those arrays. ``size`` is
chosen a little above the training input size, so random resized crops keep enough pixels.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

#: Formats we accept: an allow-list, so a renamed PDF or an exotic codec is reported, not decoded.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "MPO"})
#: Decompression-bomb guard: images larger than this many pixels are refused before decoding.
MAX_PIXELS = 64_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why."""


def decode_square(data: bytes, size: int) -> np.ndarray:
    """Decode ``data`` to a ``(size, size, 3)`` uint8 RGB array.

    Raises:
        ImageDecodeError: empty, truncated, unsupported or oversized images.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise ImageDecodeError(
                    f"format {image.format!r} is not one of {sorted(ALLOWED_FORMATS)}"
                )
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(f"{width}x{height} pixels is over the limit of {MAX_PIXELS}")
            if image.format == "JPEG":
                # Let libjpeg scale by 1/2, 1/4, 1/8 while decoding: much faster for large photos.
                image.draft("RGB", (size, size))
            image = image.convert("RGB")
            scale = size / min(image.size)
            new_w = max(size, round(image.size[0] * scale))
            new_h = max(size, round(image.size[1] * scale))
            if (new_w, new_h) != image.size:
                image = image.resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0)
            left = (new_w - size) // 2
            top = (new_h - size) // 2
            image = image.crop((left, top, left + size, top + size))
            return np.asarray(image, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
