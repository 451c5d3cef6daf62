"""Encoded image bytes -> an upright 8-bit RGB picture, the way a photo application shows it.

Every path that reads an image (training's library, indexing, queries, Denoise) decodes through
:func:`decode_rgb`, so a photo looks the same to all of them:

* an allow-list of formats (JPEG/MPO, PNG, WebP, BMP, GIF, TIFF, AVIF, and HEIF/HEIC through
  ``pillow-heif`` where it is installed): a renamed PDF or an exotic codec is reported, not decoded;
* the pixel limit is checked on the header, before any pixel is decoded (decompression bombs);
* the EXIF orientation tag (1-8) is applied, so a phone photo stored sideways comes out upright;
* 16-bit and 32-bit greyscale scaled to 8 bits (Pillow's own ``convert`` clips them to white), float
  images taken as 0..1, CMYK and palette converted, and transparency flattened on white
  (:data:`BACKGROUND`), as a browser shows a transparent PNG on a white page;
* JPEGs that will be shrunk anyway are decoded with libjpeg's DCT scaling (1/2, 1/4, 1/8).

numpy and Pillow only (the server imports this without torch).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIF/HEIC (iPhone photos): an optional plugin that registers itself with Pillow
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF = {"HEIF"}
except ImportError:  # pragma: no cover - the plugin is a declared dependency
    _HEIF = set()

#: Formats we accept. MPO is a JPEG with extra frames (many cameras write it).
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF", "AVIF"} | _HEIF)
#: The formats named to a person (MPO is a JPEG to them).
FORMAT_NAMES = ", ".join(sorted(ALLOWED_FORMATS - {"MPO"}))
#: Decompression-bomb guard: images larger than this many pixels are refused before decoding.
MAX_PIXELS = 64_000_000
#: What transparent pixels are flattened on (RGB).
BACKGROUND = (255, 255, 255)
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why."""


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = 0) -> Image.Image:
    """``data`` -> an upright RGB ``PIL.Image`` (8 bits per channel).

    Args:
        data: the encoded file.
        max_pixels: refuse images with more pixels than this (read from the header).
        min_side: > 0 lets a JPEG decode at 1/2, 1/4 or 1/8 scale while both sides stay at least
            this long (the caller will shrink it to about that size anyway).

    Raises:
        ImageDecodeError: empty, truncated, unsupported or oversized images.
    """
    with _decoding():
        image = _open_checked(data, max_pixels)
        if min_side and image.format in ("JPEG", "MPO"):
            image.draft("RGB", (min_side, min_side))  # keeps both sides >= min_side
        image.load()
        return eight_bit_rgb(ImageOps.exif_transpose(image))


def probe(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the header alone (no pixel decoded: microseconds), with the same
    refusals as :func:`decode_rgb` for empty, unknown, unsupported and oversized images; for
    checks that must answer before a request waits in a queue."""
    with _decoding(), _open_checked(data, max_pixels) as image:
        return image.size


def header_facts(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int, bool]:
    """``(width, height, has_exif)`` from the header alone, for choosing which of two copies to
    keep (the larger picture, then the one that still carries its camera's EXIF)."""
    with _decoding(), _open_checked(data, max_pixels) as image:
        try:
            exif = len(image.getexif()) > 0
        except Exception:  # a damaged EXIF block is no EXIF worth keeping
            exif = False
        return image.width, image.height, exif


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only), refusing empty data, other formats and too many pixels."""
    if not data:
        raise ImageDecodeError("empty file")
    image = Image.open(io.BytesIO(data))
    if image.format not in ALLOWED_FORMATS:
        raise ImageDecodeError(f"format {image.format!r} is not one of: {FORMAT_NAMES}")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(f"{width}x{height} pixels is over the limit of {max_pixels}")
    return image


@contextlib.contextmanager
def _decoding():
    """Every decoder failure (and a decompression bomb) as :class:`ImageDecodeError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("cannot decode image: not a file in a format we read") from exc
    except (
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
        KeyError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageDecodeError(f"cannot decode image: {_readable(exc)}") from exc


def _readable(exc: BaseException) -> str:
    """The decoder's message without the in-memory file's repr (``<_io.BytesIO object at 0x..>``),
    which tells a caller nothing."""
    return _OBJECT_REPR.sub("the image", str(exc)).strip() or type(exc).__name__


def eight_bit_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``RGB``: deep greyscale scaled (not clipped), alpha flattened."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        if mode == "F":
            scaled = np.clip(np.nan_to_num(values) * 255.0, 0, 255)
        elif mode.startswith("I;16") or values.max(initial=0) <= 65535:
            scaled = values.astype(np.float64) / 257.0  # 0..65535 -> 0..255
        else:
            scaled = values.astype(np.float64) / 16843009.0  # 0..2^32-1 -> 0..255
        grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if (mode == "P" and "transparency" in image.info) or mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, BACKGROUND)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


def orientation_is_upright(data: bytes) -> bool:
    """True when a JPEG surely needs no EXIF rotation: it carries no EXIF block at all. (One that
    does goes through Pillow, which reads the tag.) Cheap: a search of the first 64 KiB."""
    return b"Exif\x00\x00" not in data[:65536]
