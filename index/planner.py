"""Choosing an index for a collection, and tuning its search parameters to a target recall.

The choice follows the faiss wiki's guidelines (and autofaiss's approach) from the number of vectors
``n``, the dimension ``d`` and a memory budget:
  * ``n < exact_below`` (default 50,000): ``flat``: exact search is fast enough and needs no training;
  * otherwise ``ivf_sq8`` (``d + 16`` bytes a vector) if it fits the budget, else ``ivf_pq``
    (``m + 16``), with ``nlist`` about ``4 sqrt(n)``. HNSW stays available by name, but on this
    project's 2-core CPU IVF-SQ8 measured faster at the 0.95 recall target and 4x smaller
    (``benchmarks/bench_index.py``, 1M x 128: 9,759 vs 1,676 single queries/s, 154 vs 664 bytes a vector).
Tuning raises ``nprobe`` (IVF) or ``efSearch`` (HNSW) in powers of two until recall@k against exact
search on held-out queries reaches the target, and returns the smallest value that does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simclr_search.index.hits import exact_search
from simclr_search.index.vector_index import IndexSpec, VectorIndex, _default_pq_m, default_nlist

EXACT_BELOW = 50_000


def bytes_per_vector(kind: str, dim: int, hnsw_m: int = 32, pq_m: int = 0) -> int:
    """Approximate resident bytes per vector, ids included."""
    if kind == "flat":
        return 4 * dim + 16
    if kind == "hnsw":
        return 4 * dim + 8 * hnsw_m + 16
    if kind == "ivf_flat":
        return 4 * dim + 16
    if kind == "ivf_sq8":
        return dim + 16
    if kind == "ivf_pq":
        return (pq_m or _default_pq_m(dim)) + 16
    raise ValueError(f"unknown kind {kind!r}")


def choose_spec(
    n: int, dim: int, memory_budget_bytes: int = 8 << 30, exact_below: int = EXACT_BELOW
) -> IndexSpec:
    """The index kind and shape for ``n`` vectors of ``dim`` within ``memory_budget_bytes``."""
    if n < exact_below:
        return IndexSpec(kind="flat")
    nlist = default_nlist(n)
    if bytes_per_vector("ivf_sq8", dim) * n <= memory_budget_bytes:
        return IndexSpec(kind="ivf_sq8", nlist=nlist, params={"nprobe": 16})
    return IndexSpec(kind="ivf_pq", nlist=nlist, pq_m=_default_pq_m(dim), params={"nprobe": 16})


def exact_neighbours(
    base_ids: np.ndarray, base: np.ndarray, queries: np.ndarray, k: int, metric: str
) -> np.ndarray:
    """Ground truth ``(q, k)`` internal ids by brute force (numpy, chunked)."""
    return exact_search(queries, base_ids, base, k, metric)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true top-k ids found in the returned top-k, averaged over queries."""
    hits = sum(
        len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)
    )
    return hits / truth.size


@dataclass
class TuneResult:
    param: str
    value: int
    recall: float
    tried: dict[int, float]


def tune(
    index: VectorIndex, queries: np.ndarray, truth: np.ndarray, k: int, target_recall: float
) -> TuneResult:
    """Smallest nprobe / efSearch reaching ``target_recall`` (or the best tried, if none does)."""
    kind = index.spec.kind
    if kind == "flat":
        return TuneResult("", 0, 1.0, {})
    if kind == "hnsw":
        name, values = "ef_search", [16, 32, 64, 128, 256, 512, 1024]
    else:
        nlist = max(1, index.spec.nlist)
        name, values = "nprobe", sorted({min(nlist, 2**i) for i in range(0, 12)})
    tried: dict[int, float] = {}
    for value in values:
        _, ids = index.search(queries, k, params={name: value})
        tried[value] = recall_at_k(ids, truth)
        if tried[value] >= target_recall:
            return TuneResult(name, value, tried[value], tried)
    best = max(tried, key=lambda v: (tried[v], -v))
    return TuneResult(name, best, tried[best], tried)
