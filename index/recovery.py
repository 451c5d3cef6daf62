"""Opening a collection's FAISS index after a clean close, a crash or a lost snapshot.

Load the snapshot (or rebuild from SQLite if it is missing or corrupt) -> replay the changes logged
after its ``seq`` -> if FAISS and SQLite still disagree on the count, rebuild from SQLite. SQLite is
the source of truth (a write is acknowledged only after its transaction commits), so a process
killed at any point reopens with every acknowledged write searchable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simclr_search.index.metadata import MetadataStore
from simclr_search.index.rebuild import build_from_sqlite
from simclr_search.index.snapshot import CorruptSnapshot, read_snapshot
from simclr_search.index.vector_index import IndexSpec, VectorIndex

if TYPE_CHECKING:
    from simclr_search.index.collection import CollectionConfig

log = logging.getLogger(__name__)


def load_index(
    folder: Path, meta: MetadataStore, config: CollectionConfig, spec: IndexSpec
) -> tuple[VectorIndex, int]:
    """The snapshot's index and the change-log ``seq`` it holds, or a rebuild from SQLite (and
    SQLite's last ``seq``) when the snapshot is missing or unreadable."""
    try:
        snap = read_snapshot(folder / "index.faiss")
        if "spec" in snap.header:  # the structure the snapshot holds, whatever the settings say
            spec = IndexSpec.from_dict(snap.header["spec"])
        vectors = VectorIndex.deserialize(
            snap.index_bytes, spec, config.dim, config.metric, snap.header.get("tombstones", ())
        )
        return vectors, snap.seq
    except (CorruptSnapshot, ValueError, RuntimeError) as exc:
        if (folder / "index.faiss").exists() or meta.count():
            log.warning("collection %s: %s; rebuilding the index from SQLite", folder.name, exc)
        return build_from_sqlite(meta, config, spec), meta.last_seq()


def replay(
    vi: VectorIndex, meta: MetadataStore, config: CollectionConfig, name: str, after: int
) -> tuple[VectorIndex, int]:
    """Apply the logged changes after ``seq`` ``after`` to ``vi`` by their net effect; returns the
    index (``vi``, or a rebuild from SQLite) and the last ``seq`` it holds.

    Internal ids are never reused, so an id both added and deleted after the snapshot was never in
    it and needs nothing; other deletes leave the snapshot, other adds join it with their vectors
    from SQLite. (Replaying in order instead breaks when a vector added and later deleted is no
    longer in SQLite to add.) Any disagreement left ends in a rebuild from SQLite.
    """
    changes = meta.changes_after(after)
    added = {item_id for _, op, item_id in changes if op == "add"}
    deleted = {item_id for _, op, item_id in changes if op == "del"}
    consistent = True
    try:
        vi.remove(np.fromiter(deleted - added, dtype=np.int64))
        ids, vectors = meta.vectors_for(sorted(added - deleted), config.dim)
        vi.add(ids, vectors)
    except RuntimeError as exc:  # a delete of a vector the snapshot lacks: rebuild below
        log.warning("collection %s: replay failed (%s)", name, exc)
        consistent = False
    applied = after
    if changes:
        applied = changes[-1][0]
        log.info("collection %s: replayed %d changes after the snapshot", name, len(changes))
    if not consistent or vi.live != meta.count():
        log.warning(
            "collection %s: index has %d vectors, SQLite %d; rebuilding from SQLite",
            name,
            vi.live,
            meta.count(),
        )
        return build_from_sqlite(meta, config, vi.spec), meta.last_seq()
    return vi, applied
