"""Search results: FAISS's (scores, internal ids) rows -> :class:`Hit` lists with ids and metadata.

Also the exact search used for filtered queries, whose few allowed vectors come from SQLite rather
than from the FAISS index (``index.collection.EXACT_FILTER_MAX``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simclr_search.index.metadata import MetadataStore


@dataclass(frozen=True)
class Hit:
    external_id: str
    score: float
    uri: str
    content_hash: str
    metadata: dict[str, Any]
    signature: bytes = b""  # the caller's, as stored (index.metadata.NewItem)


def exact_search(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-``k``: for each of ``queries`` ``(q, dim)``, the best of ``vectors``
    ``(n, dim)`` as (scores, ids), each ``(q, min(k, n))``, scored as FAISS scores them: squared L2
    distance ascending, or inner product descending. Chunks of 256 queries bound the memory."""
    k = min(k, len(ids))
    if k == 0:  # nothing to find: one empty row per query
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), ids.dtype)
    scores_out = [np.empty((0, k), np.float32)]
    ids_out = [np.empty((0, k), ids.dtype)]
    for start in range(0, len(queries), 256):
        q = queries[start : start + 256]
        if metric == "l2":
            score = (q**2).sum(1, keepdims=True) - 2 * q @ vectors.T + (vectors**2).sum(1)
            rank = score
        else:
            score = q @ vectors.T
            rank = -score
        top = np.argpartition(rank, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.take_along_axis(rank, top, 1).argsort(axis=1), 1)
        scores_out.append(np.take_along_axis(score, top, 1))
        ids_out.append(ids[top])
    return np.concatenate(scores_out), np.concatenate(ids_out)


def to_hits(meta: MetadataStore, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """One list of hits per query row; padding (id -1, NaN score) and items deleted between the
    FAISS search and this lookup are left out."""
    items = meta.items_by_internal(np.unique(ids[ids >= 0]).tolist())
    out = []
    for row_scores, row_ids in zip(scores, ids, strict=True):
        hits = []
        for score, internal in zip(row_scores, row_ids, strict=True):
            item = items.get(int(internal))
            if internal < 0 or item is None or math.isnan(score):
                continue
            hits.append(
                Hit(
                    item.external_id,
                    float(score),
                    item.uri,
                    item.content_hash,
                    item.metadata,
                    item.signature,
                )
            )
        out.append(hits)
    return out
