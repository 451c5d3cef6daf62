"""A collection split into N shards by a hash of the external id, behind the collection's interface.

Each shard is a whole :class:`index.collection.Collection` (crash-safe SQLite + FAISS in its own
folder). Writes and lookups by id go to the one shard that owns the id; a search asks every shard
for the same ``k`` and merges, which is exact: the global top-``k`` is a subset of the union of the
per-shard top-``k`` lists. Content-hash lookups (resume, duplicates) ask every shard, because the
same picture may sit under ids owned by different shards.

The shards are reached through a :class:`ShardCalls` (run one method on some shards, in parallel):
:class:`LocalShards` holds collections in this process, ``index.ray_shards`` holds each in a Ray
actor on the cluster's nodes. This module imports no engine.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from simclr_search.index.checks import as_vectors, check_ids, check_k
from simclr_search.index.collection import Collection, CollectionConfig, more_like
from simclr_search.index.errors import NotFound, NotSupported
from simclr_search.index.hits import Hit
from simclr_search.index.metadata import Item, NewItem, check_filter


def shard_of(external_id: str, shards: int) -> int:
    """The shard that owns ``external_id``: blake2b of its UTF-8 bytes, modulo ``shards``.

    A keyed, stable hash (not Python's ``hash``, which changes per process), so every process and
    every restart routes an id to the same shard."""
    digest = hashlib.blake2b(external_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


class ShardCalls(Protocol):
    """Runs one collection method on several shards at once; the first error is raised."""

    count: int

    def run(self, calls: Sequence[tuple[int, str, tuple]]) -> list[Any]:
        """``[(shard, method, args)]`` -> the results, in the order of ``calls``."""
        ...


class LocalShards:
    """Shards as collections in this process (tests, and one machine with several disks)."""

    def __init__(self, collections: Sequence[Collection]) -> None:
        if not collections:
            raise ValueError("a sharded collection needs at least one shard")
        self.collections = list(collections)
        self.count = len(self.collections)
        self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="shard")

    def run(self, calls: Sequence[tuple[int, str, tuple]]) -> list[Any]:
        futures = [
            self._pool.submit(getattr(self.collections[shard], method), *args)
            for shard, method, args in calls
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for collection in self.collections:
            collection.close()


def merge_hits(rows: Sequence[list[Hit]], k: int, larger_is_nearer: bool) -> list[Hit]:
    """The best ``k`` of several shards' hit lists (each sorted best first), best first."""
    key = (lambda h: -h.score) if larger_is_nearer else (lambda h: h.score)
    return list(heapq.merge(*rows, key=key))[:k]


class ShardedCollection:
    """A collection of ``shards.count`` shards, used where the service uses a :class:`Collection`.

    Args:
        name: the collection's name.
        config: the settings every shard was created with (dim, metric, space).
        shards: how to reach the shards; shard ``i`` owns the ids with ``shard_of(id, n) == i``.
    """

    def __init__(self, name: str, config: CollectionConfig, shards: ShardCalls) -> None:
        self.name = name
        self.config = config
        self.shards = shards

    # -- routing ----------------------------------------------------------------------------------
    def _owners(self, ids: Sequence[str]) -> dict[int, list[int]]:
        """Shard -> positions in ``ids`` it owns (in order)."""
        owners: dict[int, list[int]] = {}
        for position, external_id in enumerate(ids):
            owners.setdefault(shard_of(external_id, self.shards.count), []).append(position)
        return owners

    def _everywhere(self, method: str, *args: Any) -> list[Any]:
        return self.shards.run([(i, method, args) for i in range(self.shards.count)])

    # -- writes -----------------------------------------------------------------------------------
    def add(self, items: Sequence[NewItem]) -> list[str]:
        return self._write("add", items)

    def upsert(self, items: Sequence[NewItem]) -> list[str]:
        """Insert or replace by id, each item on its shard; durable on every shard when this returns.

        Not one transaction across shards: if a shard fails, the others' items are stored and the
        error is raised; sending the same batch again (upsert is idempotent) completes it."""
        return self._write("upsert", items)

    def _write(self, method: str, items: Sequence[NewItem]) -> list[str]:
        if not items:
            return []
        check_ids([item.external_id for item in items])
        owners = self._owners([item.external_id for item in items])
        self.shards.run(
            [(shard, method, ([items[p] for p in where],)) for shard, where in owners.items()]
        )
        return [item.external_id for item in items]

    def delete(self, external_ids: Sequence[str], missing_ok: bool = False) -> int:
        """Delete by id; unknown ids raise :class:`NotFound` with nothing deleted unless ``missing_ok``."""
        check_ids(external_ids)
        owners = self._owners(external_ids)
        groups = [(shard, [external_ids[p] for p in where]) for shard, where in owners.items()]
        if not missing_ok:
            found = self.shards.run([(shard, "missing", (ids,)) for shard, ids in groups])
            missing = [i for part in found for i in part]
            if missing:
                raise NotFound(f"unknown ids in collection {self.name!r}: {missing[:10]}")
        removed = self.shards.run([(shard, "delete", (ids, True)) for shard, ids in groups])
        return sum(removed)

    # -- reads ------------------------------------------------------------------------------------
    def count(self) -> int:
        return sum(self._everywhere("count"))

    def get(self, external_ids: Sequence[str]) -> list[Item]:
        check_ids(external_ids)
        owners = self._owners(external_ids)
        groups = [(shard, [external_ids[p] for p in where]) for shard, where in owners.items()]
        try:
            parts = self.shards.run([(shard, "get", (ids,)) for shard, ids in groups])
        except NotFound:  # name every unknown id, not only the first shard's
            found = self.shards.run([(shard, "missing", (ids,)) for shard, ids in groups])
            missing = [i for part in found for i in part]
            raise NotFound(f"unknown ids in collection {self.name!r}: {missing[:10]}") from None
        by_id = {item.external_id: item for part in parts for item in part}
        return [by_id[i] for i in external_ids]

    def known_hashes(
        self, hashes: Sequence[str], signed_only: bool = False, min_signature: int = 1
    ) -> set[str]:
        return set().union(
            *self._everywhere("known_hashes", list(hashes), signed_only, min_signature)
        )

    def search(
        self,
        queries: Any,
        k: int = 10,
        filter: tuple[str, Any] | None = None,
        params: dict[str, int] | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` per query over all shards: each shard's top-``k``, merged (exact)."""
        check_k(k)
        if filter is not None:
            check_filter(*filter)
        q = as_vectors(queries, self.config.dim, self.config.metric, self.name, "query vectors")
        parts = self._everywhere("search", q, k, filter, params)
        nearer = self.config.metric != "l2"
        return [merge_hits([part[row] for part in parts], k, nearer) for row in range(len(q))]

    def vote(
        self,
        codes: Any,
        top: int,
        max_distance: int,
        ratio: float,
        filter: tuple[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``top`` items with the most code votes over all shards (each item's codes live in
        its one shard, so its votes are counted there; the ratio test sees that shard's codes)."""
        check_k(top)
        if filter is not None:
            check_filter(*filter)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        parts = self._everywhere("vote", codes, top, max_distance, ratio, filter)
        return merge_hits(parts, top, True)

    def search_by_id(
        self, external_id: str, k: int = 10, filter: tuple[str, Any] | None = None
    ) -> list[Hit]:
        """ "More like this": neighbours of a stored item, itself excluded."""
        return more_like(self, external_id, k, filter)

    def stats(self) -> dict[str, Any]:
        """The collection's figures summed over shards, each shard's own under ``shards``."""
        parts = self._everywhere("stats")
        kinds = sorted({part["index"]["kind"] for part in parts})
        return {
            "name": self.name,
            "dim": self.config.dim,
            "metric": self.config.metric,
            "count": sum(part["count"] for part in parts),
            "index": {"kind": kinds[0] if len(kinds) == 1 else "+".join(kinds)},
            "index_vectors": sum(part["index_vectors"] for part in parts),
            "tombstones": sum(part["tombstones"] for part in parts),
            "votes": {
                "kind": "+".join(sorted({part["votes"]["kind"] for part in parts})),
                "codes": sum(part["votes"]["codes"] for part in parts),
                "bytes": sum(part["votes"]["bytes"] for part in parts),
            },
            "index_bytes": sum(part["index_bytes"] for part in parts),
            "sqlite_bytes": sum(part["sqlite_bytes"] for part in parts),
            "shards": parts,
        }

    def snapshot(self) -> None:
        self._everywhere("snapshot")

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        return all(self._everywhere("wait_for_rebuild", timeout))

    # -- whole-collection jobs --------------------------------------------------------------------
    def _whole_collection(self, *_: Any, **__: Any) -> Any:
        raise NotSupported(
            f"collection {self.name!r} is sharded: finding duplicates walks one collection's"
            " vectors and is not available on a sharded collection yet; run 'simclr dedup' on"
            " an unsharded copy"
        )

    neighbour_ids = vector_batches = items_by_internal = same_content = _whole_collection
