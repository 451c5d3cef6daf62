"""Sharded collections over real collections in this process (no Ray): routing, exact merge, and
the errors a single collection gives. The same class runs over Ray actors in tests/serving/test_ray.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simclr_search.index.collection import Collection, CollectionConfig
from simclr_search.index.errors import NotFound, NotSupported
from simclr_search.index.metadata import NewItem
from simclr_search.index.sharded import LocalShards, ShardedCollection, merge_hits, shard_of

DIM = 16


def _items(n: int, seed: int = 0) -> list[NewItem]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return [
        NewItem(f"img-{i}", vectors[i], f"/lib/{i}.jpg", f"hash-{i}", {"n": i}) for i in range(n)
    ]


def _pair(tmp_path: Path, shards: int, metric: str = "cosine"):
    config = CollectionConfig(dim=DIM, metric=metric)
    single = Collection.create(tmp_path / "single", config)
    parts = [Collection.create(tmp_path / f"shard-{i}", config) for i in range(shards)]
    return single, ShardedCollection("sharded", config, LocalShards(parts)), parts


def test_shard_of_is_stable_and_spreads_ids() -> None:
    assert shard_of("photo.jpg", 4) == shard_of("photo.jpg", 4)  # not Python's per-process hash
    counts = np.bincount([shard_of(f"id-{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900  # about 1000 each


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_sharded_search_equals_one_collection(tmp_path: Path, metric: str) -> None:
    single, sharded, parts = _pair(tmp_path, 3, metric)
    items = _items(300)
    single.upsert(items)
    assert sharded.upsert(items) == [item.external_id for item in items]
    assert sharded.count() == 300 and min(p.count() for p in parts) > 60
    for part in parts:  # each item sits on the shard its id hashes to, and only there
        for item in part.get(
            [i.external_id for i in items if shard_of(i.external_id, 3) == parts.index(part)]
        ):
            assert shard_of(item.external_id, 3) == parts.index(part)
    queries = np.random.default_rng(1).standard_normal((12, DIM)).astype(np.float32)
    for k in (1, 10, 50):
        want = single.search(queries, k)
        got = sharded.search(queries, k)
        for w, g in zip(want, got, strict=True):
            assert [h.external_id for h in g] == [h.external_id for h in w]
            np.testing.assert_allclose([h.score for h in g], [h.score for h in w], rtol=1e-5)
    assert [h.external_id for h in sharded.search_by_id("img-7", 5)] == [
        h.external_id for h in single.search_by_id("img-7", 5)
    ]
    filtered = sharded.search(queries[:2], 5, ("n", 3))
    assert [[h.external_id for h in row] for row in filtered] == [["img-3"], ["img-3"]]


def test_sharded_reads_and_deletes_behave_like_one_collection(tmp_path: Path) -> None:
    _, sharded, _ = _pair(tmp_path, 4)
    sharded.upsert(_items(40))
    ids = ["img-9", "img-2", "img-31"]
    assert [item.external_id for item in sharded.get(ids)] == ids  # the caller's order
    with pytest.raises(NotFound, match="img-404"):
        sharded.get(["img-2", "img-404"])
    with pytest.raises(NotFound, match="img-404"):
        sharded.delete(["img-2", "img-404"])
    assert sharded.count() == 40  # nothing deleted when one id is unknown
    assert sharded.delete(["img-2", "img-404"], missing_ok=True) == 1
    assert sharded.known_hashes(["hash-3", "hash-2", "nope"]) == {"hash-3"}
    stats = sharded.stats()
    assert stats["count"] == 39 and len(stats["shards"]) == 4
    with pytest.raises(NotSupported, match="sharded"):
        sharded.same_content()


def test_merge_keeps_the_best_k_in_order() -> None:
    from simclr_search.index.hits import Hit

    def hits(*scores: float) -> list[Hit]:
        return [Hit(f"{s}", s, "", "", {}) for s in scores]

    merged = merge_hits([hits(0.9, 0.5), hits(0.95, 0.2), hits()], 3, larger_is_nearer=True)
    assert [h.score for h in merged] == [0.95, 0.9, 0.5]
    merged = merge_hits([hits(0.1, 0.5), hits(0.05, 0.7)], 3, larger_is_nearer=False)
    assert [h.score for h in merged] == [0.05, 0.1, 0.5]
