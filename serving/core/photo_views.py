"""A photo, decoded once, and the views of it that copy detection embeds.

Why views: the global embedding of the whole picture misses the edits people make before
reposting a photo (Douze et al. 2021, DISC21): a quarter turn, a border, the photo inset in a
screenshot. Rather than retrain, the query is embedded as several views and each stored image is
scored by its best view (cheap: the encoder sees 32 px squares):

* the whole picture in the 8 orientations of the square (4 quarter turns, each mirrored);
* the same after trimming uniform borders (:func:`trim_border`), upright and mirrored, when there
  is one to trim;
* windows of 50% and 70% of each side on a 3 x 3 grid, for a photo that is only part of the query
  (an inset, a meme template).

A picture, stored or a whole view of the query, is embedded as its :func:`tiles`: the squares that
cover it along its longer side, whose embeddings are pooled into one vector
(``bundle.preprocess.pool_tiles``), so the sides of a landscape photo count. Windows are parts
already and are embedded as one square each. ``serving/core/copy_scores.py`` turns the views' best
scores and a local-feature check into a calibrated answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from simclr_search.bundle.decode import ImageDecodeError, decode_rgb
from simclr_search.bundle.preprocess import centre_square, fast_jpeg, square_tiles

#: The longer side photos are analysed at (local features, views): enough for ORB's 8 scales.
PHOTO_SIDE = 640
WINDOW_SCALES = (0.5, 0.7)
WINDOW_STEPS = 3
#: A border row/column differs from the border colour by less than this on average (0-255).
BORDER_TOLERANCE = 12
WHOLE, WINDOW = 0, 1


def photo(data: bytes, max_pixels: int) -> np.ndarray:
    """``data`` -> ``(H, W, 3)`` uint8, upright, the longer side at most :data:`PHOTO_SIDE`
    (big JPEGs decode at a DCT scale; nothing is enlarged).

    Raises:
        ImageDecodeError: as :func:`bundle.decode.decode_rgb`.
    """
    fast = fast_jpeg(data, max_pixels, PHOTO_SIDE // 2)  # small EXIF-free JPEGs: no Pillow
    if fast is not None and max(fast.shape[:2]) <= PHOTO_SIDE:
        return fast
    image = (
        Image.fromarray(fast) if fast is not None else decode_rgb(data, max_pixels, PHOTO_SIDE // 2)
    )
    w, h = image.size
    scale = PHOTO_SIDE / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def square(pixels: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` -> ``(size, size, 3)``: the shorter side resized to ``size`` (bicubic), the
    centre cropped (``bundle.preprocess.centre_square``); what a window is embedded as."""
    if pixels.shape[:2] == (size, size):
        return pixels
    return centre_square(Image.fromarray(pixels), size)


def tiles(pixels: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` -> ``(T, size, size, 3)``: the squares a picture is stored as
    (``bundle.preprocess.square_tiles``)."""
    if pixels.shape[:2] == (size, size):
        return pixels[None]
    return square_tiles(Image.fromarray(pixels), size)


def middle(squares: np.ndarray) -> np.ndarray:
    """The middle one of a picture's tiles ``(T, S, S, 3)`` (the first of the two middle ones):
    the square its 8 x 8 tie-break thumbnail is taken from (the centre of a square picture)."""
    return squares[(len(squares) - 1) // 2]


def trim_border(pixels: np.ndarray, tolerance: float = BORDER_TOLERANCE) -> np.ndarray:
    """``pixels`` without the uniform bands (a border, padding, letterbox bars) along its edges;
    at most a third of each side is taken, and a picture that is all border is kept as it is."""
    h, w = pixels.shape[:2]
    if h < 8 or w < 8:
        return pixels
    values = pixels.astype(np.int16)

    def depth(lines: np.ndarray) -> int:  # (n, length, 3), outermost first
        reference = np.median(lines[0], axis=0)
        diff = np.abs(lines - reference).max(axis=-1)  # (n, length)
        uniform = (diff.mean(axis=1) < tolerance) & (diff.max(axis=1) < 4 * tolerance)
        return int(np.argmin(uniform)) if not uniform.all() else len(uniform)

    top = depth(values[: h // 3])
    bottom = depth(values[h - 1 : h - 1 - h // 3 : -1])
    left = depth(values[:, : w // 3].transpose(1, 0, 2))
    right = depth(values[:, w - 1 : w - 1 - w // 3 : -1].transpose(1, 0, 2))
    inner = pixels[top : h - bottom, left : w - right]
    if top + bottom + left + right == 0 or inner.std() < tolerance / 2:
        return pixels  # nothing to trim, or nothing but border
    return inner


def _dihedral(view: np.ndarray) -> list[np.ndarray]:
    out = []
    for turns in range(4):
        turned = np.rot90(view, turns)
        out += [turned, turned[:, ::-1]]
    return out


def windows(pixels: np.ndarray) -> list[np.ndarray]:
    """Sub-pictures of :data:`WINDOW_SCALES` of each side on a :data:`WINDOW_STEPS` grid."""
    h, w = pixels.shape[:2]
    out = []
    for scale in WINDOW_SCALES:
        wh, ww = max(1, int(h * scale)), max(1, int(w * scale))
        for y in np.linspace(0, h - wh, WINDOW_STEPS).astype(int):
            for x in np.linspace(0, w - ww, WINDOW_STEPS).astype(int):
                out.append(pixels[y : y + wh, x : x + ww])
    return out


@dataclass(frozen=True)
class ViewSet:
    """Which views a query gets (all by default; the benchmark's ablation turns parts off)."""

    orientations: bool = True
    trimmed: bool = True
    windows: bool = True


ALL_VIEWS = ViewSet()


@dataclass(frozen=True)
class QueryViews:
    """A query's views, as the encoder gets them.

    ``squares`` ``(N, S, S, 3)`` uint8, view after view; view ``v`` is ``counts[v]`` consecutive
    squares whose embeddings are pooled (``bundle.preprocess.pool_tiles``). The first view is the
    stored images' own, exactly. ``kinds`` ``(V,)`` is :data:`WHOLE` or :data:`WINDOW`,
    ``mirrored`` ``(V,)`` whether the view is a mirror image.
    """

    squares: np.ndarray
    counts: np.ndarray
    kinds: np.ndarray
    mirrored: np.ndarray

    @property
    def thumbnail_square(self) -> np.ndarray:
        """``(1, S, S, 3)``: the first view's :func:`middle` tile, for the thumbnail tie-break."""
        return middle(self.squares[: self.counts[0]])[None]


def query_views(pixels: np.ndarray, size: int, parts: ViewSet = ALL_VIEWS) -> QueryViews:
    """The views of a query photo (:class:`QueryViews`).

    The whole picture in 8 orientations; trimmed of borders (if any) upright and mirrored; windows
    upright. A picture under 2 ``size`` on its shorter side (an icon) gets the orientations only.
    All but the first come from a copy 4 ``size`` on its shorter side, which keeps the views'
    detail and makes them ~20x cheaper to cut and resize than from the full photo.
    """
    stored = tiles(pixels, size)
    whole = [np.stack(turned) for turned in zip(*map(_dihedral, stored), strict=True)]
    if not parts.orientations:
        whole = whole[:1]
    mirrored = [i % 2 == 1 for i in range(len(whole))]  # _dihedral: upright, mirrored, ...
    if min(pixels.shape[:2]) >= 2 * size:  # an icon's windows would be a few pixels, enlarged
        small = _shrink(pixels, 4 * size)
        trimmed = trim_border(small) if parts.trimmed else small
        if trimmed.shape != small.shape:
            view = tiles(trimmed, size)
            whole += [view, view[:, :, ::-1]]
            mirrored += [False, True]
        cut = [square(part, size)[None] for part in windows(trimmed)] if parts.windows else []
    else:
        cut = []
    groups = whole + cut
    return QueryViews(
        np.ascontiguousarray(np.concatenate(groups)),
        np.array([len(g) for g in groups], dtype=np.int64),
        np.array([WHOLE] * len(whole) + [WINDOW] * len(cut), dtype=np.int8),
        np.array(mirrored + [False] * len(cut)),
    )


def _shrink(pixels: np.ndarray, shorter: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    scale = shorter / min(h, w)
    if scale >= 1:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(
        Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    )


__all__ = [
    "ALL_VIEWS",
    "PHOTO_SIDE",
    "WHOLE",
    "WINDOW",
    "ImageDecodeError",
    "QueryViews",
    "middle",
    "photo",
    "query_views",
    "square",
    "tiles",
    "trim_border",
    "windows",
]
