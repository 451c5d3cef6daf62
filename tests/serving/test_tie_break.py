"""Near-tie ordering by thumbnail (serving/tie_break.py) against hand-written references."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from simclr_search.serving.core.tie_break import (
    SAME_IMAGE_MARGIN,
    SAME_IMAGE_SIMILARITY,
    SIGNATURE_BYTES,
    near_tie_order,
    signatures,
    thumbnail_similarity,
    thumbnails,
)


def _reference_thumbnail(image: np.ndarray) -> np.ndarray:
    """8 x 8 box means by explicit loops over the same box edges (floor of i * H / 8)."""
    h, w, _ = image.shape
    rows = [i * h // 8 for i in range(9)]
    cols = [j * w // 8 for j in range(9)]
    out = np.empty((8, 8, 3))
    for i in range(8):
        for j in range(8):
            out[i, j] = image[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].reshape(-1, 3).mean(0)
    return np.rint(out).astype(np.uint8).ravel()


@pytest.mark.parametrize("size", [(32, 32), (24, 24), (8, 8), (37, 50), (32, 37), (37, 32)])
def test_thumbnails_are_box_means(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(0, 256, size=(3, *size, 3), dtype=np.uint8)
    got = thumbnails(pixels)
    assert got.shape == (3, SIGNATURE_BYTES) and got.dtype == np.uint8
    for image, row in zip(pixels, got, strict=True):
        np.testing.assert_array_equal(row, _reference_thumbnail(image))
    if size == (32, 32):  # and what PIL's box filter makes of it
        pil = np.asarray(Image.fromarray(pixels[0]).resize((8, 8), Image.BOX)).ravel()
        assert np.abs(got[0].astype(int) - pil).max() <= 1


def test_thumbnails_refuse_images_smaller_than_the_grid() -> None:
    with pytest.raises(ValueError, match="H>=8"):
        thumbnails(np.zeros((1, 4, 32, 3), np.uint8))


def _sig(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return signatures(rng.integers(0, 256, size=(1, 32, 32, 3), dtype=np.uint8))[0]


def test_similarity_is_cosine_of_mean_removed_thumbnails_and_sees_mirror_images() -> None:
    a, b = _sig(1), _sig(2)
    x = np.frombuffer(a, np.uint8).astype(float)
    y = np.frombuffer(b, np.uint8).astype(float)
    x, y = x - x.mean(), y - y.mean()
    mirrored = np.frombuffer(a, np.uint8).reshape(8, 8, 3)[:, ::-1].tobytes()
    brighter = np.clip(np.frombuffer(a, np.uint8).astype(int) + 10, 0, 255).astype(np.uint8)
    got = thumbnail_similarity(a, [a, b, mirrored, brighter.tobytes()])
    assert got[0] == pytest.approx(1.0, abs=1e-5)
    assert got[2] == pytest.approx(1.0, abs=1e-5)  # a flipped copy is still a copy
    assert got[3] > 0.99  # brightness does not count
    own = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
    xm = np.frombuffer(mirrored, np.uint8).astype(float)
    xm -= xm.mean()
    assert got[1] == pytest.approx(max(own, xm @ y / np.linalg.norm(xm) / np.linalg.norm(y)), 1e-4)


def _like(query: bytes, other: bytes, share: float) -> bytes:
    """A thumbnail part ``query``, part ``other``: like the query but not the same image."""
    q = np.frombuffer(query, np.uint8).astype(float)
    o = np.frombuffer(other, np.uint8).astype(float)
    return np.rint(share * q + (1 - share) * o).astype(np.uint8).tobytes()


def test_only_near_ties_are_reordered_by_thumbnail() -> None:
    query, other = _sig(1), _sig(2)
    like = _like(query, other, 0.8)  # nearer the query than ``other``, not the same image
    likeness = thumbnail_similarity(query, [like, other])
    assert likeness[0] < SAME_IMAGE_SIMILARITY and likeness[0] > likeness[1] + 0.1
    scores = np.array([0.95, 0.94, 0.90, 0.5])
    # The likelier thumbnail (index 1) is 0.01 behind: within 0.02 it comes first.
    order = near_tie_order(scores, query, [other, like, like, other], margin=0.02)
    np.testing.assert_array_equal(order, [1, 0, 2, 3])
    # Index 2, 0.05 behind, is not a near tie, and not near enough the query's to be the image.
    order = near_tie_order(scores, query, [other, other, like, other], margin=0.02)
    np.testing.assert_array_equal(order, [0, 1, 2, 3])
    # Margin 0, no query signature, a near tie stored without one: the index's order.
    for margin, q, cands in [
        (0.0, query, [other, query, other, other]),
        (0.02, b"", [other, query, other, other]),
        (0.02, query, [other, b"", query, other]),
    ]:
        np.testing.assert_array_equal(near_tie_order(scores, q, cands, margin), [0, 1, 2, 3])
    assert near_tie_order(np.array([0.9]), query, [other]).tolist() == [0]


def test_a_hit_with_the_querys_own_thumbnail_comes_first_from_further_behind() -> None:
    """Blur, JPEG and noise leave the 8 x 8 thumbnail as it was; another crop of the same photo
    does not, though the embedding may put it a little nearer."""
    query, other = _sig(1), _sig(2)
    same = _like(query, other, 0.995)  # the query's thumbnail, off by rounding
    assert thumbnail_similarity(query, [same])[0] >= SAME_IMAGE_SIMILARITY
    behind = 0.95 - SAME_IMAGE_MARGIN + 0.001
    scores = np.array([0.95, 0.94, behind, 0.5])
    cands = [other, _like(query, other, 0.8), same, other]
    np.testing.assert_array_equal(near_tie_order(scores, query, cands, 0.02), [2, 1, 0, 3])
    # Its mirror image counts too.
    mirrored = np.frombuffer(same, np.uint8).reshape(8, 8, 3)[:, ::-1].tobytes()
    cands_mirrored = [other, other, mirrored, other]
    np.testing.assert_array_equal(near_tie_order(scores, query, cands_mirrored), [2, 0, 1, 3])
    # Past the wider margin, or a hit within it stored without a thumbnail, or margin 0: no.
    far = np.array([0.95, 0.94, 0.95 - SAME_IMAGE_MARGIN - 0.001, 0.5])
    np.testing.assert_array_equal(
        near_tie_order(far, query, [other, other, same, other]), [0, 1, 2, 3]
    )
    for margin, cands in [(0.02, [other, other, b"", same]), (0.0, [other, other, same, other])]:
        near_end = np.array([0.95, 0.94, 0.93, behind])
        np.testing.assert_array_equal(near_tie_order(near_end, query, cands, margin), [0, 1, 2, 3])


def test_l2_distances_use_twice_the_margin() -> None:
    """For unit vectors a squared L2 distance is 2 - 2 cos: a cosine margin of 0.02 is 0.04."""
    query, other = _sig(1), _sig(2)
    cands = [other, _like(query, other, 0.8)]
    near = near_tie_order(np.array([0.10, 0.139]), query, cands, 0.02, larger_is_nearer=False)
    far = near_tie_order(np.array([0.10, 0.141]), query, cands, 0.02, larger_is_nearer=False)
    assert near.tolist() == [1, 0] and far.tolist() == [0, 1]
    # The same-image rule's 0.05 is 0.1 in squared distance.
    cands = [other, query]
    near = near_tie_order(np.array([0.10, 0.199]), query, cands, 0.02, larger_is_nearer=False)
    far = near_tie_order(np.array([0.10, 0.201]), query, cands, 0.02, larger_is_nearer=False)
    assert near.tolist() == [1, 0] and far.tolist() == [0, 1]
