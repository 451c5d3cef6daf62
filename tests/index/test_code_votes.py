"""Code votes (index.code_votes) against a hand-written count, and through a collection: written
with the items, gone with them, rebuilt from SQLite after a restart, re-planned as an inverted
file, filtered, and the same over shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simclr_search.index import code_votes
from simclr_search.index.code_votes import CodeVotes
from simclr_search.index.collection import Collection, CollectionConfig
from simclr_search.index.errors import InvalidArgument
from simclr_search.index.metadata import NewItem
from simclr_search.index.sharded import LocalShards, ShardedCollection

WIDTH = 32


def _codes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, WIDTH), dtype=np.uint8)


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(q, n)`` bit differences, written out bit by bit."""
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)


def _reference(stored: dict[int, np.ndarray], queries: np.ndarray, distance: int, ratio: float):
    """Votes as the docstring defines them: each query code's nearest stored code votes for its
    owner when within ``distance`` and nearer than ``ratio`` times the nearest other owner's."""
    owners = np.concatenate([np.full(len(c), o) for o, c in stored.items()])
    every = np.concatenate(list(stored.values()))
    d = _hamming(queries, every)
    votes: dict[int, int] = {}
    for row in d:
        order = np.argsort(row, kind="stable")
        first = order[0]
        others = [j for j in order[1:2] if owners[j] != owners[first]]
        rival = row[others[0]] if others else np.inf
        if row[first] <= distance and row[first] < ratio * rival:
            votes[int(owners[first])] = votes.get(int(owners[first]), 0) + 1
    return votes


def _noisy(codes: np.ndarray, rng: np.random.Generator, bits: int) -> np.ndarray:
    """``codes`` with ``bits`` random bits flipped in each."""
    out = codes.copy()
    for row in out:
        for b in rng.choice(8 * WIDTH, bits, replace=False):
            row[b // 8] ^= 1 << (b % 8)
    return out


def test_votes_match_a_hand_written_count() -> None:
    rng = np.random.default_rng(0)
    stored = {7: _codes(rng, 40), 9: _codes(rng, 40), 12: _codes(rng, 40)}
    votes = CodeVotes(WIDTH)
    votes.add((o, c.tobytes()) for o, c in stored.items())
    # 25 of item 7's codes slightly changed, 10 of item 9's, and 20 strangers.
    queries = np.concatenate(
        [_noisy(stored[7][:25], rng, 20), _noisy(stored[9][:10], rng, 30), _codes(rng, 20)]
    )
    ids, counts = votes.vote(queries, top=5, max_distance=64, ratio=0.8)
    expected = _reference(stored, queries, 64, 0.8)
    assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == expected
    assert ids[0] == 7 and counts[0] == 25 and ids[1] == 9  # most votes first
    top1 = votes.vote(queries, top=1, max_distance=64, ratio=0.8)
    assert top1[0].tolist() == [7]
    allowed = votes.vote(queries, top=5, max_distance=64, ratio=0.8, allowed=np.array([9]))
    assert allowed[0].tolist() == [9]


def test_codes_of_a_removed_owner_no_longer_vote() -> None:
    rng = np.random.default_rng(1)
    a, b = _codes(rng, 30), _codes(rng, 30)
    votes = CodeVotes(WIDTH)
    votes.add([(1, a.tobytes()), (2, b.tobytes()), (3, b"")])
    assert votes.ntotal == 60
    votes.remove(np.array([1, 99]))
    assert votes.ntotal == 30
    assert len(votes.vote(a, 3, 64, 0.8)[0]) == 0
    assert votes.vote(b, 3, 64, 0.8)[0].tolist() == [2]


def test_the_inverted_file_finds_what_the_exact_scan_finds() -> None:
    rng = np.random.default_rng(2)
    # Clustered codes, as real descriptors are: 300 owners, each a few centres' variations.
    centres = _codes(rng, 64)
    stored = {o: _noisy(centres[rng.integers(0, 64, 64)], rng, 40) for o in range(300)}
    sample = np.concatenate(list(stored.values()))
    assert len(sample) >= code_votes.IVF_FROM
    ivf = CodeVotes(WIDTH, sample)
    assert ivf.kind == "ivf"
    ivf.add((o, c.tobytes()) for o, c in stored.items())
    flat = CodeVotes(WIDTH)
    flat.add((o, c.tobytes()) for o, c in stored.items())
    hits = 0
    for owner in range(0, 300, 15):
        query = _noisy(stored[owner], rng, 12)
        assert flat.vote(query, 1, 64, 0.8)[0].tolist() == [owner]
        hits += ivf.vote(query, 1, 64, 0.8)[0].tolist() == [owner]
    assert hits >= 19  # of 20: the cells visited miss a few neighbours, not the owner


def test_wrong_widths_are_refused() -> None:
    votes = CodeVotes(WIDTH)
    with pytest.raises(InvalidArgument, match="32-byte codes"):
        votes.add([(1, b"x" * 33)])
    with pytest.raises(InvalidArgument, match=r"\(n, 32\)"):
        votes.vote(np.zeros((3, 16), np.uint8), 1, 64, 0.8)


def _item(i: int, codes: np.ndarray | None, tag: str = "a") -> NewItem:
    vector = np.random.default_rng(i).standard_normal(8).astype(np.float32)
    blob = codes.tobytes() if codes is not None else b""
    return NewItem(f"item-{i}", vector, metadata={"tag": tag}, codes=blob)


def test_a_collection_votes_with_its_items_codes_across_writes_and_restarts(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    codes = {i: _codes(rng, 64) for i in range(6)}
    folder = tmp_path / "c"
    with Collection.create(folder, CollectionConfig(dim=8)) as c:
        c.add([_item(i, codes[i], "even" if i % 2 == 0 else "odd") for i in range(6)])
        c.add([_item(6, None)])  # an item without codes is still a normal item
        hits = c.vote(_noisy(codes[3][:30], rng, 16), 3, 64, 0.8)
        assert hits[0].external_id == "item-3" and hits[0].score == 30
        with pytest.raises(InvalidArgument, match="at most 256 codes of 32 bytes"):
            c.add([NewItem("bad", np.ones(8, np.float32), codes=b"x" * 31)])
        # Replacing an item replaces its codes.
        c.upsert([_item(3, codes[5][:10])])
        assert [h.external_id for h in c.vote(codes[3][:30], 3, 64, 0.8)] == []
        c.delete(["item-5"])
        assert [h.external_id for h in c.vote(codes[5], 3, 64, 0.8)] == ["item-3"]
    with Collection.open(folder) as c:  # rebuilt from SQLite
        assert c.stats()["votes"]["codes"] == 4 * 64 + 10
        assert c.vote(codes[1][:20], 1, 64, 0.8)[0].external_id == "item-1"
        assert c.vote(codes[1][:20], 1, 64, 0.8, filter=("tag", "even")) == []
        even = c.vote(np.concatenate([codes[1], codes[2][:5]]), 3, 64, 0.8, ("tag", "even"))
        assert [h.external_id for h in even] == ["item-2"]


def test_a_growing_collection_re_plans_its_votes_as_an_inverted_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    per = 128
    count = code_votes.IVF_FROM // per + 2
    centres = _codes(rng, 256)
    codes = [_noisy(centres[rng.integers(0, 256, per)], rng, 40) for _ in range(count)]
    with Collection.create(tmp_path / "c", CollectionConfig(dim=8)) as c:
        for start in range(0, count, 32):
            c.add([_item(i, codes[i]) for i in range(start, min(count, start + 32))])
        assert c.wait_for_rebuild(120)
        stats = c.stats()["votes"]
        assert stats["kind"] == "ivf" and stats["codes"] == count * per
        c.add([_item(count, codes[0])])  # written after the re-plan: still votes
        best = c.vote(_noisy(codes[7], rng, 10), 2, 64, 0.8)
        assert best[0].external_id == "item-7"


def test_sharded_votes_equal_one_collections(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    config = CollectionConfig(dim=8)
    single = Collection.create(tmp_path / "single", config)
    parts = [Collection.create(tmp_path / f"shard-{i}", config) for i in range(3)]
    shards = LocalShards(parts)
    sharded = ShardedCollection("s", config, shards)
    codes = {i: _codes(rng, 64) for i in range(12)}
    items = [_item(i, codes[i]) for i in range(12)]
    single.add(items)
    sharded.add(items)
    try:
        for i in (0, 5, 11):
            query = np.concatenate([_noisy(codes[i][:20], rng, 16), codes[(i + 1) % 12][:8]])
            one = [(h.external_id, h.score) for h in single.vote(query, 4, 64, 0.8)]
            many = [(h.external_id, h.score) for h in sharded.vote(query, 4, 64, 0.8)]
            assert one == many and one[0][0] == f"item-{i}"
        assert sharded.stats()["votes"]["codes"] == single.stats()["votes"]["codes"] == 12 * 64
    finally:
        single.close()
        shards.close()
