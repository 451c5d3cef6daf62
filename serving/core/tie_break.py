"""Near ties in reverse image search, ordered by a tiny thumbnail of each image.

Why: the encoder is trained to ignore crops, shifts, flips and colour (SimCLR's augmentations, Chen
et al. 2020), so two copies of one photo, the original and a slightly shifted or re-cropped
duplicate, embed almost identically, and a blurred copy of one may land a hair nearer the other.
Pixel layout tells them apart where the embedding cannot. Among the hits whose scores lie within
``margin`` of the best, the order is by score plus the cosine similarity of the query's and the
hit's 8 x 8 colour thumbnails (mean removed, so brightness does not count; the query's mirror image
is tried too, since a flipped copy is still a copy). Hits outside the margin keep the embedding's
order, so only near-equal candidates ever swap.

One exception reaches further: a hit within ``SAME_IMAGE_MARGIN`` (0.05) of the best whose
thumbnail is near identical to the query's (cosine >= ``SAME_IMAGE_SIMILARITY``, 0.99, the mirror
image counted) is taken for the image itself and comes first. Blur, JPEG and noise leave an 8 x 8
thumbnail all but unchanged, while another crop of the same photo, which the embedding may put a
little nearer, shifts it. Crops and rotations change the thumbnail, so the rule leaves them be.

Each stored item keeps its thumbnail (192 bytes) at the start of the index's opaque ``signature``
(local features may follow, ``local_features.py``); items stored by vector alone have none, and a near-tie group with any such item keeps the embedding's order.
``benchmarks/bench_search_quality.py`` measures the search with and without these rules; which sets
the margins were chosen on is in docs/experiments.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIDE = 8
SIGNATURE_BYTES = SIDE * SIDE * 3
#: Scores (cosine) within this of the best are near ties; 0 turns the tie-break off.
DEFAULT_MARGIN = 0.02
#: A hit this near the best (cosine) whose thumbnail is this like the query's comes first.
SAME_IMAGE_MARGIN = 0.05
SAME_IMAGE_SIMILARITY = 0.99
#: Hits fetched for a search by image when the tie-break is on (then cut to the k asked for), so
#: that with k = 1 the best thumbnail match among the near ties can still come first.
CANDIDATES = 10


def _box_sums(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``x`` over 8 boxes along ``axis`` (uint32), and each box's length. Box i spans
    ``floor(i n / 8)`` up to ``floor((i + 1) n / 8)``."""
    n = x.shape[axis]
    if n % SIDE == 0:  # the usual case: k strided slices added up, no reduction kernel
        k = n // SIDE
        index = [slice(None)] * x.ndim
        total = None
        for j in range(k):
            index[axis] = slice(j, None, k)
            part = x[tuple(index)]
            total = part.astype(np.uint32) if total is None else total + part
        return total, np.full(SIDE, k)
    edges = np.linspace(0, n, SIDE + 1).astype(int)
    return np.add.reduceat(x.astype(np.uint32), edges[:-1], axis=axis), np.diff(edges)


def thumbnails(pixels: np.ndarray) -> np.ndarray:
    """``(B, H, W, C)`` uint8 -> ``(B, 64 C)`` uint8: each image's mean over an 8 x 8 grid of boxes.

    H and W need not be multiples of 8 (the boxes then differ by a pixel); at least 8 each. Sums of
    strided slices, exact in integers and cheaper than a mean over a reshaped view. Not matrix
    products: BLAS's threads would compete with ONNX Runtime's for the cores while indexing.
    """
    if pixels.ndim != 4 or pixels.shape[1] < SIDE or pixels.shape[2] < SIDE:
        raise ValueError(f"expected (B, H>=8, W>=8, C) pixels, got {pixels.shape}")
    b, c = pixels.shape[0], pixels.shape[3]
    rows, row_counts = _box_sums(pixels, 1)
    sums, column_counts = _box_sums(rows, 2)
    means = sums / np.outer(row_counts, column_counts)[None, :, :, None]
    return np.rint(means).astype(np.uint8).reshape(b, SIDE * SIDE * c)


def signatures(pixels: np.ndarray) -> list[bytes]:
    """One thumbnail signature per image of ``(B, H, W, 3)`` uint8 pixels, as stored."""
    return [row.tobytes() for row in thumbnails(pixels)]


def _unit(rows: np.ndarray) -> np.ndarray:
    """``(n, 192)`` thumbnails -> mean-removed, unit-length float vectors."""
    x = rows.astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def _mirror(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, SIDE, SIDE, 3)[:, :, ::-1].reshape(len(rows), -1)


def thumbnail_similarity(query: bytes, candidates: Sequence[bytes]) -> np.ndarray:
    """Cosine similarity ``(n,)`` of the query's thumbnail (or its mirror image, whichever is
    nearer) to each candidate's."""
    q = np.frombuffer(query[:SIGNATURE_BYTES], dtype=np.uint8)[None]
    bank = _unit(np.stack([np.frombuffer(c[:SIGNATURE_BYTES], dtype=np.uint8) for c in candidates]))
    return np.maximum(bank @ _unit(q)[0], bank @ _unit(_mirror(q))[0])


def near_tie_order(
    scores: np.ndarray,
    query: bytes,
    candidates: Sequence[bytes],
    margin: float = DEFAULT_MARGIN,
    larger_is_nearer: bool = True,
) -> np.ndarray:
    """The order ``(n,)`` (indices into ``scores``) to return hits in.

    Args:
        scores: ``(n,)`` the hits' scores, best first, as the index ranked them: similarities, or
            squared L2 distances with ``larger_is_nearer=False`` (for unit vectors a distance is
            2 - 2 cos, so the margin is doubled there to mean the same).
        query: the query image's signature; empty for none (the order is then unchanged).
        candidates: each hit's stored signature; empty for none.
        margin: how far below the best score a near tie reaches; 0 keeps the index's order (and
            turns the same-image rule off too).
    """
    n = len(scores)
    identity = np.arange(n)
    if n < 2 or margin <= 0 or len(query) != SIGNATURE_BYTES:
        return identity
    similarity = np.asarray(scores, dtype=np.float64)
    if not larger_is_nearer:
        similarity = -similarity / 2
    # Hits are best first, so each margin's hits are a prefix; a hit there stored without a
    # thumbnail (by vector) leaves that rule off: its likeness is unknown.
    near = int(np.count_nonzero(similarity >= similarity[0] - margin))
    wide = int(np.count_nonzero(similarity >= similarity[0] - SAME_IMAGE_MARGIN))
    reach = max(near, wide)
    signed = 0
    while signed < reach and len(candidates[signed]) >= SIGNATURE_BYTES:
        signed += 1
    if signed < 2:
        return identity
    likeness = thumbnail_similarity(query, candidates[:signed])
    order = identity
    if 2 <= near <= signed:
        combined = similarity[:near] + likeness[:near]
        order = np.concatenate([np.argsort(-combined, kind="stable"), identity[near:]])
    if 2 <= wide <= signed:
        same = int(np.argmax(likeness[:wide]))
        if likeness[same] >= SAME_IMAGE_SIMILARITY and order[0] != same:
            order = np.concatenate([[same], order[order != same]])
    return order
