"""Brute-force search (filtered queries, recall ground truth) against a plain sort."""

from __future__ import annotations

import numpy as np
import pytest

from simclr_search.index.hits import exact_search


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("k", [1, 7, 40, 41, 100])
def test_exact_search_matches_a_full_sort(metric: str, k: int) -> None:
    rng = np.random.default_rng(k)
    vectors = rng.normal(size=(41, 8)).astype(np.float32)
    queries = rng.normal(size=(300, 8)).astype(np.float32)  # more than one chunk of 256
    ids = np.arange(1000, 1041, dtype=np.int64)
    scores, found = exact_search(queries, ids, vectors, k, metric)
    if metric == "l2":
        full = ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
        order = np.argsort(full, axis=1)
    else:
        full = queries @ vectors.T
        order = np.argsort(-full, axis=1)
    kept = min(k, len(ids))
    assert scores.shape == found.shape == (300, kept)
    np.testing.assert_array_equal(found, ids[order[:, :kept]])
    np.testing.assert_allclose(scores, np.take_along_axis(full, order[:, :kept], 1), atol=1e-4)


def test_exact_search_of_nothing_is_empty_rows() -> None:
    scores, found = exact_search(
        np.ones((3, 4), np.float32), np.empty(0, np.int64), np.empty((0, 4), np.float32), 5, "l2"
    )
    assert scores.shape == found.shape == (3, 0)
    scores, found = exact_search(
        np.empty((0, 4), np.float32), np.arange(2), np.ones((2, 4), np.float32), 5, "l2"
    )
    assert scores.shape == found.shape == (0, 2)
