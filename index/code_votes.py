"""Votes from binary codes: which stored items share the most of a query's codes.

Why: a search by vector finds what *looks* alike; it can rank an item far down when a query covers
most of it with an edit (heavy stripes, a small inset), though many of the item's local patches
are still there, unchanged. Each item may carry a set of fixed-width binary codes (the caller's:
the server stores its strongest ORB descriptors, Rublee et al. 2011); a query's codes each vote
for the item that owns their nearest stored code, when that code is near (Hamming distance at
most ``max_distance``) and clearly nearer than the second nearest (Lowe's ratio test,
Lowe 2004). The items with the most votes are candidates the vector search may have missed: the
inverted-file voting of Sivic & Zisserman 2003 ("Video Google"), with exact codes instead of
visual words. The index knows nothing of what the codes mean.

Structure: an exact Hamming scan (faiss ``IndexBinaryFlat``) while the codes are few, and an
inverted file (``IndexBinaryIVF``, binary k-means cells) from :data:`IVF_FROM` codes, where a
query scans :data:`NPROBE` cells. Each code's faiss id is its owner's internal id, so deleting an
item deletes its codes. The codes live in SQLite (``items.codes``); this structure is rebuilt
from there when a collection opens, and re-planned in the collection's background rebuild.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from simclr_search.index.errors import InvalidArgument
from simclr_search.index.faiss_loader import faiss

#: Codes from which an inverted file replaces the exact scan (about 256 photos at 64 codes).
IVF_FROM = 16_384
#: Cells one query code visits in the inverted file.
NPROBE = 32
#: Training sample per cell for the inverted file's k-means.
TRAIN_PER_CELL = 64


def cells_for(codes: int) -> int:
    """Inverted-file cells for ``codes`` codes: about ``4 * sqrt(n)``, a power of two."""
    return int(2 ** round(math.log2(max(64, min(65_536, 4 * math.sqrt(codes))))))


class CodeVotes:
    """Codes of ``code_bytes`` bytes each, owned by internal ids, counted into votes.

    Args:
        code_bytes: the width of every code (32 for 256-bit ORB descriptors).
        sample: codes to train the inverted file on; None (or fewer than :data:`IVF_FROM`) for
            the exact scan.
    """

    def __init__(self, code_bytes: int, sample: np.ndarray | None = None) -> None:
        if code_bytes <= 0:
            raise InvalidArgument(
                f"code width must be a positive number of bytes, got {code_bytes}"
            )
        self.code_bytes = code_bytes
        self._faiss = faiss()
        bits = 8 * code_bytes
        if sample is not None and len(sample) >= IVF_FROM:
            self.cells = cells_for(len(sample))
            self._quantizer = self._faiss.IndexBinaryFlat(bits)
            self._index = self._faiss.IndexBinaryIVF(self._quantizer, bits, self.cells)
            rng = np.random.default_rng(0)
            size = min(len(sample), TRAIN_PER_CELL * self.cells)
            self._index.train(np.ascontiguousarray(sample[rng.choice(len(sample), size, False)]))
            self._index.nprobe = NPROBE
        else:
            self.cells = 0
            self._index = self._faiss.IndexBinaryIDMap(self._faiss.IndexBinaryFlat(bits))
        self.planned_for = 0 if sample is None else len(sample)

    @property
    def kind(self) -> str:
        return "ivf" if self.cells else "flat"

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def split(self, blob: bytes) -> np.ndarray:
        """A stored blob -> ``(n, code_bytes)`` uint8 codes."""
        if len(blob) % self.code_bytes:
            raise InvalidArgument(
                f"codes must be a whole number of {self.code_bytes}-byte codes, got {len(blob)} bytes"
            )
        return np.frombuffer(blob, np.uint8).reshape(-1, self.code_bytes)

    def add(self, owners: Iterable[tuple[int, bytes]]) -> None:
        """Add each ``(internal id, codes blob)``; empty blobs add nothing."""
        ids, rows = [], []
        for owner, blob in owners:
            if blob:
                codes = self.split(blob)
                rows.append(codes)
                ids.append(np.full(len(codes), owner, np.int64))
        if rows:
            self._index.add_with_ids(
                np.ascontiguousarray(np.concatenate(rows)), np.concatenate(ids)
            )

    def remove(self, owners: np.ndarray) -> None:
        """Drop every code of the internal ids ``owners`` (ids without codes are ignored)."""
        owners = np.asarray(owners, dtype=np.int64)
        if len(owners) and self.ntotal:
            self._index.remove_ids(self._faiss.IDSelectorBatch(owners))

    def vote(
        self,
        queries: np.ndarray,
        top: int,
        max_distance: int,
        ratio: float,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``top`` owners with the most votes from ``(q, code_bytes)`` uint8 ``queries``.

        Returns:
            ``(ids (m,), votes (m,))``, most votes first, ``m <= top``, owners with no vote left
            out; only owners in ``allowed`` when it is given.
        """
        queries = np.ascontiguousarray(queries, dtype=np.uint8)
        if queries.ndim != 2 or queries.shape[1] != self.code_bytes:
            raise InvalidArgument(
                f"query codes must be (n, {self.code_bytes}) bytes, got shape {queries.shape}"
            )
        empty = np.zeros(0, np.int64)
        if not len(queries) or not self.ntotal or top <= 0:
            return empty, empty
        distance, owner = self._index.search(queries, 2)
        # A second neighbour of the same owner is not a rival (an item's repeated texture).
        rival = np.where(owner[:, 1] == owner[:, 0], np.iinfo(np.int32).max, distance[:, 1])
        good = (owner[:, 0] >= 0) & (distance[:, 0] <= max_distance)
        good &= (distance[:, 0] < ratio * rival) | (owner[:, 1] < 0)
        voters = owner[good, 0]
        if allowed is not None:
            voters = voters[np.isin(voters, allowed)]
        if not len(voters):
            return empty, empty
        ids, votes = np.unique(voters, return_counts=True)
        order = np.lexsort((ids, -votes))[:top]
        return ids[order], votes[order]

    def stats(self) -> dict[str, int | str]:
        return {
            "kind": self.kind,
            "codes": self.ntotal,
            "cells": self.cells,
            "bytes": self.ntotal * (self.code_bytes + 8),
        }
