"""Building a collection's FAISS index from its SQLite rows: plan the structure, fill it, tune it.

SQLite holds every vector and code (the source of truth); the FAISS index and the code votes are
derived and can always be rebuilt from it (the votes at every open): at open when the snapshot is
missing or disagrees, when an auto-planned collection has doubled (flat -> IVF), and when HNSW
holds too many tombstones. The locking around a rebuild (a background thread that catches up
from the change log) stays in :mod:`index.collection`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from simclr_search.index import planner
from simclr_search.index.code_votes import IVF_FROM, CodeVotes
from simclr_search.index.metadata import MetadataStore
from simclr_search.index.vector_index import IndexSpec, VectorIndex

if TYPE_CHECKING:
    from simclr_search.index.collection import CollectionConfig

log = logging.getLogger(__name__)


def plan(spec: IndexSpec | None, count: int, config: CollectionConfig) -> IndexSpec:
    """``spec`` completed for ``count`` vectors (IVF cells), or chosen from the data if ``None``."""
    if spec is None:
        return planner.choose_spec(
            count, config.dim, config.memory_budget_bytes, config.exact_below
        )
    if spec.kind.startswith("ivf") and not spec.nlist:
        spec.nlist = planner.default_nlist(count)
    return spec


def all_vectors(meta: MetadataStore, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Every live (internal id, vector) pair: ``(n,)`` int64 and ``(n, dim)`` float32."""
    batches = list(meta.iter_vectors(dim))
    if not batches:
        return np.empty(0, np.int64), np.empty((0, dim), np.float32)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def build_from_sqlite(
    meta: MetadataStore, config: CollectionConfig, spec: IndexSpec, added: set[int] | None = None
) -> VectorIndex:
    """A fresh index holding SQLite's vectors (trained on a sample for IVF kinds); the internal ids
    it added go into ``added`` when given."""
    vi = VectorIndex(IndexSpec.from_dict(spec.to_dict()), config.dim, config.metric)
    if vi.needs_training:
        count = meta.count()
        if count < max(vi.spec.nlist, 1):
            log.warning(
                "only %d vectors for %d IVF cells; using an exact index until there are more",
                count,
                vi.spec.nlist,
            )
            vi = VectorIndex(IndexSpec(kind="flat"), config.dim, config.metric)
        else:
            size = min(count, max(256 * vi.spec.nlist, 10_000), 200_000)
            vi.train(meta.sample_vectors(size, config.dim)[1])
    for ids, vectors in meta.iter_vectors(config.dim):
        vi.add(ids, vectors)
        if added is not None:
            added.update(ids.tolist())
    return vi


def tune(
    vi: VectorIndex,
    meta: MetadataStore,
    config: CollectionConfig,
    target_recall: float,
    queries: int = 200,
    k: int = 10,
    only: set[int] | None = None,
) -> dict[str, Any]:
    """Pick nprobe / efSearch for ``target_recall`` on held-out queries (stored vectors + small
    noise), written into ``vi.spec.params``. ``only``: the ids ``vi`` holds, when SQLite has moved
    on since it was built (the truth must come from the same vectors, or recall looks low and the
    search gets slow)."""
    if vi.spec.kind == "flat" or vi.live < 2 * queries:
        return {}
    ids, base = all_vectors(meta, config.dim)
    if only is not None:
        keep = np.isin(ids, np.fromiter(only, dtype=np.int64, count=len(only)))
        ids, base = ids[keep], base[keep]
    pick = np.random.default_rng(0).choice(len(ids), size=queries, replace=False)
    held_out = base[pick] + np.random.default_rng(1).normal(0, 0.01, (queries, base.shape[1]))
    held_out = held_out.astype(np.float32)
    if config.metric == "cosine":
        held_out /= np.linalg.norm(held_out, axis=1, keepdims=True)
    truth = planner.exact_neighbours(ids, base, held_out, k, config.metric)
    result = planner.tune(vi, held_out, truth, k, target_recall)
    vi.spec.params[result.param] = result.value
    return {"tuned": {result.param: result.value}, "recall_at_10": result.recall}


def build_votes(meta: MetadataStore, code_bytes: int, built: set[int] | None = None) -> CodeVotes:
    """The code votes (``index.code_votes``) of every stored item's codes, planned for their
    count (an exact scan while few, an inverted file trained on them beyond); the ids included
    go into ``built`` when given, for a background rebuild's catch-up."""
    owners = [pair for batch in meta.iter_codes() for pair in batch]
    if built is not None:
        built.update(i for i, _ in owners)
    total = sum(len(c) for _, c in owners) // code_bytes
    sample = None
    if total >= IVF_FROM:
        sample = np.frombuffer(b"".join(c for _, c in owners), np.uint8).reshape(-1, code_bytes)
    votes = CodeVotes(code_bytes, sample)
    votes.planned_for = total
    votes.add(owners)
    return votes
