"""Whole-collection neighbour pairs and union-find, against a brute-force reference."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from simclr_search.index.collection import Collection, CollectionConfig
from simclr_search.index.errors import InvalidArgument
from simclr_search.index.metadata import NewItem
from simclr_search.index.neighbours import UnionFind, neighbour_pairs


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _collection(tmp_path: Path, vectors: np.ndarray, metric: str = "cosine") -> Collection:
    col = Collection.create(tmp_path / "c", CollectionConfig(dim=vectors.shape[1], metric=metric))
    col.add([NewItem(f"i{n}", v, content_hash=f"h{n}") for n, v in enumerate(vectors)])
    return col


def test_pairs_match_a_brute_force_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = _unit(rng.normal(size=(60, 8)))
    col = _collection(tmp_path, vectors)
    k, floor = 4, 0.2
    pairs = neighbour_pairs(col, k, floor, batch=16)  # several batches
    ids = {int(i): n for n, i in enumerate(sorted(col.items_by_internal(range(1, 61))))}
    sims = vectors @ vectors.T
    expected = set()
    for i in range(60):
        order = [j for j in np.argsort(-sims[i]) if j != i][:k]
        expected |= {(min(i, j), max(i, j)) for j in order if sims[i, j] >= floor}
    got = {(ids[int(a)], ids[int(b)]) for a, b in zip(pairs.a, pairs.b, strict=True)}
    assert got == expected
    assert (pairs.a < pairs.b).all() and len(got) == len(pairs)  # each pair once
    for a, b, s in zip(pairs.a, pairs.b, pairs.score, strict=True):
        assert s == pytest.approx(sims[ids[int(a)], ids[int(b)]], abs=1e-5)
    assert pairs.rank.min() == 0 and pairs.rank.max() < k


def test_rank_is_the_better_end(tmp_path: Path) -> None:
    # 0 and 1 are each other's nearest; 2 sits further away, nearest to 1.
    vectors = _unit(np.array([[1, 0.0], [1, 0.1], [1, 0.5], [-1, 0.2]]))
    pairs = neighbour_pairs(_collection(tmp_path, vectors), 3, -1.0)
    rank = {(int(a), int(b)): int(r) for a, b, r in zip(pairs.a, pairs.b, pairs.rank, strict=True)}
    assert rank[(1, 2)] == 0 and rank[(2, 3)] == 0  # 2's nearest is 1 (ids start at 1)
    assert rank[(1, 3)] == 1  # 1's second nearest is 3 (item 2's vector), 3's is 2


def test_a_distance_metric_is_refused(tmp_path: Path) -> None:
    col = _collection(tmp_path, _unit(np.eye(3)), metric="l2")
    with pytest.raises(InvalidArgument, match="similarity metric"):
        neighbour_pairs(col, 2, 0.0)


def test_empty_collection_has_no_pairs(tmp_path: Path) -> None:
    col = Collection.create(tmp_path / "c", CollectionConfig(dim=4))
    assert len(neighbour_pairs(col, 3, 0.0)) == 0


def test_union_find_groups_chains_and_ignores_singletons() -> None:
    uf = UnionFind()
    for a, b in [(5, 9), (9, 12), (30, 31), (7, 7)]:
        uf.union(a, b)
    uf.find(100)
    assert uf.groups() == [[5, 9, 12], [30, 31]]
    edges = list(itertools.pairwise(range(1000)))
    big = UnionFind()
    for a, b in reversed(edges):
        big.union(a, b)
    assert big.groups() == [list(range(1000))]


def test_same_content_lists_exact_copies(tmp_path: Path) -> None:
    col = Collection.create(tmp_path / "c", CollectionConfig(dim=2))
    v = np.array([1.0, 0.0], np.float32)
    col.add([NewItem(n, v, content_hash=h) for n, h in [("a", "x"), ("b", "y"), ("c", "x")]])
    col.add([NewItem("d", v), NewItem("e", v)])  # no hash: never exact copies
    groups = col.same_content()
    assert len(groups) == 1 and len(groups[0]) == 2
    assert {i.external_id for i in col.items_by_internal(groups[0]).values()} == {"a", "c"}
