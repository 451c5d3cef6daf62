"""Image intake like a photo application: EXIF orientations 1-8, HEIC, AVIF, TIFF, CMYK, 16-bit,
palette and alpha, on the functions every path decodes through (training, indexing, queries,
Denoise). References are written here from the formats' definitions, not from the decoder."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from simclr_search.bundle.decode import BACKGROUND, ImageDecodeError, decode_rgb
from simclr_search.bundle.preprocess import decode_full, decode_square

# The stored pixels for each EXIF orientation, given the upright picture (EXIF 2.3, tag 0x0112:
# how the stored rows and columns map to the displayed picture). 6: the camera was turned
# clockwise, so the stored picture is the upright one turned a quarter anticlockwise.
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


def _upright(height: int = 24, width: int = 40) -> np.ndarray:
    """Four flat quadrants of distinct colours: any wrong turn or flip moves a colour."""
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, : width // 2] = (220, 30, 30)
    a[: height // 2, width // 2 :] = (30, 220, 30)
    a[height // 2 :, : width // 2] = (30, 30, 220)
    a[height // 2 :, width // 2 :] = (230, 230, 40)
    return a


def _encode(pixels: np.ndarray | Image.Image, fmt: str, orientation: int = 0, **options) -> bytes:
    image = (
        pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.ascontiguousarray(pixels))
    )
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    upright = _upright()
    options = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
    data = _encode(STORED[orientation](upright), fmt, orientation, **options)
    lossy = fmt == "JPEG"  # edges ring a little: compare the mean, and every quadrant's centre

    def close(got: np.ndarray, want: np.ndarray) -> None:
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.mean() <= (3 if lossy else 0)
        h, w = want.shape[0] // 4, want.shape[1] // 4
        for y, x in ((h, w), (h, 3 * w), (3 * h, w), (3 * h, 3 * w)):
            assert diff[y, x].max() <= (8 if lossy else 0), (y, x)

    got = np.asarray(decode_rgb(data))
    assert got.shape == upright.shape
    close(got, upright)
    # the model's input and Denoise's input see the same upright picture
    assert decode_full(data).shape == upright.shape
    close(decode_square(data, 16), decode_square(_encode(upright, "PNG"), 16))


def test_large_sideways_jpeg_uses_dct_scaling_and_stays_upright() -> None:
    upright = np.repeat(np.repeat(_upright(), 40, 0), 40, 1)  # 960 x 1600
    data = _encode(STORED[6](upright), "JPEG", 6, quality=90)
    small = decode_rgb(data, min_side=100)
    assert small.size[0] > small.size[1]  # landscape again
    assert small.size[1] < 960 and small.size[1] >= 100  # decoded at a DCT scale, not full size
    square = decode_square(data, 32)
    reference = decode_square(_encode(upright, "PNG"), 32)
    assert np.abs(square.astype(int) - reference).mean() < 6


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    got = np.asarray(decode_rgb(data))
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(got[..., 0], expected)
    assert 100 < decode_full(data).mean() < 155  # not the white image it once was
    mid = _encode(Image.fromarray(np.full((8, 8), 32768, np.uint16)), "TIFF")
    assert np.asarray(decode_rgb(mid)).max() == 128


def test_alpha_is_flattened_on_white() -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half fully transparent
    got = np.asarray(decode_rgb(_encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert tuple(got[0, 0]) == (200, 0, 0)
    assert tuple(got[9, 9]) == BACKGROUND
    la = Image.fromarray(
        np.stack([np.full((4, 4), 50, np.uint8), np.zeros((4, 4), np.uint8)], -1), "LA"
    )
    assert tuple(np.asarray(decode_rgb(_encode(la, "PNG")))[0, 0]) == BACKGROUND


def test_palette_with_transparency() -> None:
    image = Image.new("P", (6, 6), 1)
    image.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    image.paste(0, (0, 0, 3, 6))
    data = _encode(image, "PNG", transparency=0)
    got = np.asarray(decode_rgb(data))
    assert tuple(got[0, 0]) == BACKGROUND and tuple(got[0, 5]) == (10, 200, 10)
    gif = np.asarray(decode_rgb(_encode(image, "GIF", transparency=0)))
    assert tuple(gif[0, 0]) == BACKGROUND and tuple(gif[0, 5]) == (10, 200, 10)


def test_cmyk_jpeg_and_tiff() -> None:
    rgb = _upright()
    cmyk = Image.fromarray(rgb).convert("CMYK")
    for fmt in ("JPEG", "TIFF"):
        got = np.asarray(
            decode_rgb(_encode(cmyk, fmt, **({"quality": 95} if fmt == "JPEG" else {})))
        )
        assert np.abs(got.astype(int) - rgb).mean() < 8, fmt


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF", "WEBP", "TIFF"])
def test_photo_formats_decode(fmt: str) -> None:
    """Sideways pixels with an EXIF tag 6 for the formats that carry one; HEIF states rotation in
    its own container boxes, which libheif applies while decoding, so it is stored upright here."""
    upright = _upright(64, 96)
    orientation = 1 if fmt == "HEIF" else 6
    try:
        data = _encode(STORED[orientation](upright), fmt, orientation, quality=95)
    except (KeyError, OSError) as exc:  # an encoder this build of Pillow lacks
        pytest.skip(f"cannot write {fmt} here: {exc}")
    got = np.asarray(decode_rgb(data))
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright).mean() < 10


def test_refusals_name_the_reason() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_rgb(b"")
    with pytest.raises(ImageDecodeError, match="format 'PCX' is not one of"):
        decode_rgb(_encode(_upright(), "PCX"))
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_rgb(_encode(_upright(), "PNG"), max_pixels=100)
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        decode_rgb(_encode(_upright(), "JPEG")[:200])
