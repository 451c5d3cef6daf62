"""Whole-collection neighbour pairs and their connected groups, for duplicate finding.

All pairs of a library are quadratic (10^10 at 100,000 images); instead each stored vector asks the
collection's own index for its ``k`` nearest, and the pairs scoring at least ``min_score`` are kept,
each once (``a < b``). Memory is bounded by ``batch`` queries at a time plus the kept pairs. The
groups are the connected components of the kept pairs (union-find with path halving, Tarjan 1975),
so a copy of a copy joins its original's group even when the two are not each other's neighbours.

The index knows nothing of what the vectors mean: a caller decides which pairs are duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simclr_search.index.collection import Collection
from simclr_search.index.errors import InvalidArgument

SIMILARITY_METRICS = ("cosine", "ip")


@dataclass(frozen=True)
class Pairs:
    """Pairs of internal ids ``a < b`` with their similarity and ``rank`` (0: one of the two is
    the other's nearest; the better of the two ends), each ``(n,)``."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    rank: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def neighbour_pairs(
    collection: Collection,
    k: int,
    min_score: float,
    batch: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> Pairs:
    """Every pair of stored items where one is among the other's ``k`` nearest (itself excluded)
    with similarity >= ``min_score``; ``progress(n)`` after each batch of ``n`` items."""
    if collection.config.metric not in SIMILARITY_METRICS:
        raise InvalidArgument(
            f"neighbour pairs need a similarity metric {SIMILARITY_METRICS}, "
            f"not {collection.config.metric!r}"
        )
    if k < 1:
        raise InvalidArgument(f"k must be at least 1, got {k}")
    found_a, found_b, found_s, found_r = [], [], [], []
    for ids, vectors in collection.vector_batches(batch):
        scores, hits = collection.neighbour_ids(vectors, k + 1)  # +1: each finds itself
        rows = np.repeat(ids, hits.shape[1])
        cols, flat = hits.ravel(), scores.ravel()
        keep = (cols >= 0) & (cols != rows) & (flat >= min_score)  # NaN padding fails >=
        # Rank among the row's other hits (itself, where found, comes first and is dropped).
        rank = np.cumsum((hits >= 0) & (hits != ids[:, None]), axis=1).ravel() - 1
        a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
        found_a.append(a)
        found_b.append(b)
        found_s.append(flat[keep].astype(np.float32))
        found_r.append(rank[keep].astype(np.int32))
        if progress is not None:
            progress(len(ids))
    if not found_a:
        empty = np.empty(0, np.int64)
        return Pairs(empty, empty, np.empty(0, np.float32), np.empty(0, np.int32))
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    s, r = np.concatenate(found_s), np.concatenate(found_r)
    # Each pair found from both ends: keep it once, with its best score and its best rank.
    order = np.lexsort((r, b, a))
    a, b, s, r = a[order], b[order], s[order], r[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    starts = np.nonzero(first)[0]
    best = np.maximum.reduceat(s, starts) if len(s) else s
    return Pairs(a[first], b[first], best, r[first])


class UnionFind:
    """Disjoint sets over arbitrary integer ids (internal ids need not be dense)."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self._parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self._parent[max(rx, ry)] = min(rx, ry)  # the smaller id roots: stable groups

    def groups(self) -> list[list[int]]:
        """The sets of two or more ids, each sorted, ordered by their smallest id."""
        members: dict[int, list[int]] = {}
        for x in self._parent:
            members.setdefault(self.find(x), []).append(x)
        return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])
