"""Decoding and normalisation: the fast JPEG path (simplejpeg) gives exactly Pillow's pixels and
Pillow's errors; the fused normalisation matches the formula."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import simclr_search.bundle.preprocess as preprocess
from simclr_search.bundle.preprocess import (
    MAX_TILES,
    ImageDecodeError,
    decode_full,
    decode_square,
    decode_tiles,
    normalize,
    pool_tiles,
    square_tiles,
    tile_count,
)

needs_simplejpeg = pytest.mark.skipif(
    preprocess.simplejpeg is None, reason="simplejpeg not installed"
)


def _jpeg(width: int, height: int, mode: str = "RGB", subsampling: int = 2, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    # a smooth gradient plus noise: chroma subsampling and DCT rounding both matter on it
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width, 1), y * 255 / max(height, 1), (x + y) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    image = Image.fromarray(pixels).convert(mode)
    options = {"subsampling": subsampling} if mode == "RGB" else {}
    image.save(buffer, "JPEG", quality=85, **options)
    return buffer.getvalue()


def _pillow_only(monkeypatch: pytest.MonkeyPatch, fn):
    with monkeypatch.context() as patch:
        patch.setattr(preprocess, "simplejpeg", None)
        return fn()


@needs_simplejpeg
@pytest.mark.parametrize("size", [(32, 32), (33, 47), (90, 37), (64, 64), (500, 300)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_fast_jpeg_decode_equals_pillow(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], mode: str, subsampling: int
) -> None:
    data = _jpeg(*size, mode=mode, subsampling=subsampling)
    decoders = (
        lambda: decode_square(data, 32),
        lambda: decode_tiles(data, 32),
        lambda: decode_full(data),
    )
    for decode in decoders:
        fast = decode()
        assert fast.dtype == np.uint8 and fast.shape[-1] == 3
        np.testing.assert_array_equal(fast, _pillow_only(monkeypatch, decode))


@needs_simplejpeg
def test_cmyk_jpeg_goes_through_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _jpeg(40, 30, mode="CMYK")
    np.testing.assert_array_equal(
        decode_full(data), _pillow_only(monkeypatch, lambda: decode_full(data))
    )


def test_truncated_and_oversized_jpegs_are_refused_as_before() -> None:
    data = _jpeg(200, 100)
    with pytest.raises(ImageDecodeError):
        decode_square(data[: len(data) // 2], 32)
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_square(data, 32, max_pixels=200 * 100 - 1)
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_full(data, max_pixels=200 * 100 - 1)


def test_normalize_matches_the_formula_in_float64() -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 9, 9, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    expected = (images / 255.0 - np.asarray(mean)) / np.asarray(std)
    got = normalize(images, mean, std)
    assert got.dtype == np.float32 and got.shape == (4, 3, 9, 9) and got.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(got, expected.transpose(0, 3, 1, 2), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        normalize(images.astype(np.float32), mean, std)


@pytest.mark.parametrize(
    ("width", "height", "count"),
    [
        (32, 32, 1),
        (115, 100, 1),
        (116, 100, 2),
        (4, 3, 2),
        (3, 2, 2),
        (16, 9, 2),
        (2, 1, 2),
        (215, 100, 2),
        (216, 100, 3),
        (100, 300, 3),
        (1000, 100, MAX_TILES),
    ],
)
def test_tile_count_covers_the_longer_side(width: int, height: int, count: int) -> None:
    assert tile_count(width, height) == count
    with pytest.raises(ValueError, match="positive"):
        tile_count(0, 10)


def test_square_tiles_cover_a_landscape_and_a_portrait_end_to_end() -> None:
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 256, (32, 80, 3), dtype=np.uint8)  # the short side already 32
    got = square_tiles(Image.fromarray(wide), 32)
    expected = [wide[:, 0:32], wide[:, 24:56], wide[:, 48:80]]  # 2.5:1: three, evenly spaced
    np.testing.assert_array_equal(got, expected)
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    np.testing.assert_array_equal(
        square_tiles(Image.fromarray(tall), 32), [e.transpose(1, 0, 2) for e in expected]
    )
    squareish = rng.integers(0, 256, (100, 110, 3), dtype=np.uint8)
    data = io.BytesIO()
    Image.fromarray(squareish).save(data, "PNG")
    one = decode_tiles(data.getvalue(), 32)
    assert one.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(one[0], decode_square(data.getvalue(), 32))  # the centre


def test_pool_tiles_averages_each_pictures_rows_and_keeps_single_rows_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(6, 5)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    pooled = pool_tiles(rows, [1, 3, 2])
    assert pooled.shape == (3, 5)
    np.testing.assert_array_equal(pooled[0], rows[0])
    for got, part in ((pooled[1], rows[1:4]), (pooled[2], rows[4:6])):
        mean = part.astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-6)
    raw = pool_tiles(rows, [3, 3], normalized=False)
    np.testing.assert_allclose(raw[1], rows[3:].mean(axis=0), atol=1e-6)
    assert pool_tiles(rows, [1] * 6) is rows  # all single: nothing to pool
    with pytest.raises(ValueError, match="do not split"):
        pool_tiles(rows, [2, 2])
