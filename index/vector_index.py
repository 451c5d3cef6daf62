"""The FAISS half of a collection: one index type behind one small interface, with real deletes.

Index kinds (``IndexSpec.kind``):
  * ``flat``: exact search (``IndexIDMap2`` over ``IndexFlat``); deletes remove the vector.
  * ``ivf_flat`` / ``ivf_sq8`` / ``ivf_pq``: inverted lists over ``nlist`` k-means cells, raw, 8-bit
    scalar-quantised or product-quantised (``pq_m`` bytes) codes; ids live in the lists and a
    hash-table direct map makes ``remove_ids`` exact and cheap. Trained on a sample.
  * ``hnsw``: graph search (``IndexHNSWFlat`` in an ``IndexIDMap2``). HNSW cannot remove nodes, so
    deletes become tombstones filtered at search time by an ``IDSelectorNot``; the collection
    rebuilds the index when tombstones pass a threshold.
Scores: cosine and inner product return similarity (higher is closer); L2 returns squared distance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simclr_search.index.faiss_loader import faiss

KINDS = ("flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw")
METRICS = ("cosine", "ip", "l2")


@dataclass
class IndexSpec:
    """How to build an index; stored with the collection. ``params`` are search-time knobs."""

    kind: str = "flat"
    nlist: int = 0
    pq_m: int = 0
    hnsw_m: int = 32
    ef_construction: int = 80
    params: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        return cls(**data)


def faiss_metric(metric: str) -> int:
    f = faiss()
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    return f.METRIC_L2 if metric == "l2" else f.METRIC_INNER_PRODUCT


class VectorIndex:
    """A FAISS index plus the tombstones of an HNSW index.

    Shapes: vectors ``(n, dim)`` float32, ids ``(n,)`` int64.
    """

    def __init__(self, spec: IndexSpec, dim: int, metric: str, index=None, tombstones=None) -> None:
        self.spec = spec
        self.dim = dim
        self.metric = metric
        self.index = index if index is not None else self._create()
        self.tombstones: set[int] = set(tombstones or ())

    # -- construction -----------------------------------------------------------------------------
    def _create(self):
        f = faiss()
        metric = faiss_metric(self.metric)
        spec, d = self.spec, self.dim
        if spec.kind == "flat":
            return f.IndexIDMap2(f.IndexFlat(d, metric))
        if spec.kind == "hnsw":
            inner = f.IndexHNSWFlat(d, spec.hnsw_m, metric)
            inner.hnsw.efConstruction = spec.ef_construction
            return f.IndexIDMap2(inner)
        nlist = max(1, spec.nlist)
        quantizer = f.IndexFlat(d, metric)
        if spec.kind == "ivf_flat":
            index = f.IndexIVFFlat(quantizer, d, nlist, metric)
        elif spec.kind == "ivf_sq8":
            index = f.IndexIVFScalarQuantizer(
                quantizer, d, nlist, f.ScalarQuantizer.QT_8bit, metric
            )
        else:
            m = spec.pq_m or _default_pq_m(d)
            if d % m:
                raise ValueError(f"pq_m={m} must divide the dimension {d}")
            index = f.IndexIVFPQ(quantizer, d, nlist, m, 8, metric)
        index.own_fields = True
        quantizer.this.disown()
        return index

    @property
    def needs_training(self) -> bool:
        return not self.index.is_trained

    def train(self, sample: np.ndarray) -> None:
        if self.needs_training:
            self.index.train(np.ascontiguousarray(sample, dtype=np.float32))
            if self.spec.kind.startswith("ivf"):
                self.index.set_direct_map_type(faiss().DirectMap.Hashtable)

    # -- mutation ---------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if self.needs_training:
            raise RuntimeError("index must be trained before adding vectors")
        self.index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
        )

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.asarray(ids, dtype=np.int64)
        if self.spec.kind == "hnsw":
            self.tombstones.update(int(i) for i in ids)
            return
        f = faiss()
        ids = np.ascontiguousarray(ids)
        # The hash-table direct map of IVF indexes only removes through an explicit id array.
        selector = f.IDSelectorArray(len(ids), f.swig_ptr(ids))
        removed = self.index.remove_ids(selector)
        if removed != len(ids):
            raise RuntimeError(f"index removed {removed} of {len(ids)} vectors")

    @property
    def ntotal(self) -> int:
        """Vectors in the FAISS structure, tombstoned ones included."""
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    # -- search -----------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        params: dict[str, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query: ``(scores (q, k), ids (q, k))``, id ``-1`` where fewer exist.

        ``allowed`` restricts results to those internal ids (metadata filters).
        """
        f = faiss()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params = {**self.spec.params, **(params or {})}
        selector = None
        if allowed is not None:
            selector = f.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        if self.tombstones:
            dead = f.IDSelectorBatch(
                np.fromiter(self.tombstones, dtype=np.int64, count=len(self.tombstones))
            )
            not_dead = f.IDSelectorNot(dead)
            selector = not_dead if selector is None else f.IDSelectorAnd(selector, not_dead)
            keep_alive = (dead, not_dead)  # the SWIG objects must outlive the search  # noqa: F841
        search_params = self._search_params(params, selector)
        k_eff = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if search_params is None:
            scores, ids = self.index.search(queries, k_eff)
        else:
            scores, ids = self.index.search(queries, k_eff, params=search_params)
        if k_eff < k:
            pad = k - k_eff
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=np.nan)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, ids

    def _search_params(self, params: dict[str, int], selector):
        f = faiss()
        kind = self.spec.kind
        if kind.startswith("ivf"):
            return f.SearchParametersIVF(sel=selector, nprobe=int(params.get("nprobe", 8)))
        if kind == "hnsw":
            return f.SearchParametersHNSW(sel=selector, efSearch=int(params.get("ef_search", 64)))
        if selector is not None:
            return f.SearchParameters(sel=selector)
        return None

    # -- persistence ------------------------------------------------------------------------------
    def serialize(self) -> bytes:
        return faiss().serialize_index(self.index).tobytes()

    @classmethod
    def deserialize(
        cls, data: bytes, spec: IndexSpec, dim: int, metric: str, tombstones=()
    ) -> VectorIndex:
        index = faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if index.d != dim:
            raise ValueError(f"index file has dimension {index.d}, the collection {dim}")
        return cls(spec, dim, metric, index=index, tombstones=tombstones)


def _default_pq_m(dim: int) -> int:
    """Largest of 64, 32, 16, 8, 4 that divides ``dim`` and keeps >= 2 dimensions per sub-vector."""
    for m in (64, 32, 16, 8, 4, 2, 1):
        if dim % m == 0 and dim // m >= 2:
            return m
    return 1


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) cells (the faiss wiki's guideline), at least 1 and at most n / 39."""
    return int(max(1, min(4 * math.sqrt(max(n, 1)), n // 39 if n >= 39 else 1)))
