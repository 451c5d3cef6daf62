"""A collection: named vectors with metadata, durable in SQLite, searchable through FAISS.

Write path (one writer at a time): validate -> one SQLite transaction (items + change log) -> commit
(the acknowledgement point) -> apply to the in-memory FAISS index under a brief exclusive lock.
Read path (many at once): FAISS search under the shared lock -> look up ids in SQLite.
Items may carry binary codes (``NewItem.codes``) that :meth:`Collection.vote` counts into
candidates (:mod:`index.code_votes`); they are kept beside the vectors the same way.
Re-plans (flat -> IVF as the collection grows) are built in a background thread and swapped in.
Open path: :mod:`index.recovery` (snapshot, replay of the change log, or a rebuild from SQLite).
Building, planning and tuning an index from SQLite: :mod:`index.rebuild`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from simclr_search.index import planner
from simclr_search.index.checks import (
    MAX_K,
    as_vectors,
    check_ids,
    check_k,
    check_uri,
    metadata_text,
)
from simclr_search.index.code_votes import IVF_FROM, CodeVotes
from simclr_search.index.errors import InvalidArgument, NotFound, StorageFailure
from simclr_search.index.hits import Hit, exact_search, to_hits
from simclr_search.index.metadata import Item, MetadataStore, NewItem, check_filter
from simclr_search.index.rebuild import build_from_sqlite, build_votes, plan, tune
from simclr_search.index.recovery import load_index, replay
from simclr_search.index.rwlock import RWLock
from simclr_search.index.snapshot import write_snapshot
from simclr_search.index.vector_index import KINDS, METRICS, IndexSpec, VectorIndex

log = logging.getLogger(__name__)

__all__ = ["MAX_K", "Collection", "CollectionConfig", "Hit"]

#: Filters matching at most this many items are answered exactly from SQLite's vectors.
EXACT_FILTER_MAX = 50_000
#: An item's signature (``NewItem.signature``) is a small fingerprint, not a payload store.
MAX_SIGNATURE_BYTES = 32 * 1024
#: An item's codes: at most this many (the strongest few local descriptors, not all of them).
MAX_CODES = 256
#: HNSW is rebuilt when tombstones exceed this fraction of its vectors.
TOMBSTONE_REBUILD_FRACTION = 0.2


@dataclass
class CollectionConfig:
    """Settings fixed at creation (``dim``, ``metric``, ``space``) and chosen then (``index``).

    ``space`` is an opaque label of where the vectors come from (the server stores its model
    bundle's identity): vectors of two models with the same dimension are not comparable, and
    :meth:`index.store.Store.create` refuses to hand a collection to a caller of another space.
    """

    dim: int
    metric: str = "cosine"
    space: str = ""
    index: str = "auto"
    memory_budget_bytes: int = 8 << 30
    snapshot_every: int = 100_000
    target_recall: float = 0.95
    exact_below: int = planner.EXACT_BELOW
    code_bytes: int = 32


class Collection:
    """Open with :meth:`create` or :meth:`open`; close (or use as a context manager) to snapshot."""

    def __init__(
        self,
        folder: Path,
        config: CollectionConfig,
        meta: MetadataStore,
        vectors: VectorIndex,
        votes: CodeVotes,
    ) -> None:
        self.folder = folder
        self.name = folder.name
        self.config = config
        self.meta = meta
        self._vi = vectors
        self._votes = votes
        self._lock = RWLock()
        self._writer = threading.Lock()
        self._applied_seq = meta.last_seq()
        self._snapshot_seq = 0
        self._closed = False
        self._built_for = int(meta.get_setting("built_for") or 0)
        # A re-plan runs in a thread so writes never wait for k-means (seconds at 50k vectors,
        # minutes at millions); ``_rebuild_from`` is the change-log seq it catches up from.
        self._rebuild_thread: threading.Thread | None = None
        self._rebuild_from: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, config: CollectionConfig) -> Collection:
        if config.dim <= 0 or config.dim > 65_536:
            raise InvalidArgument(f"dimension must be in 1..65536, got {config.dim}")
        if config.metric not in METRICS:
            raise InvalidArgument(f"metric must be one of {METRICS}, got {config.metric!r}")
        if config.index != "auto" and config.index not in KINDS:
            raise InvalidArgument(f"index must be 'auto' or one of {KINDS}, got {config.index!r}")
        folder.mkdir(parents=True, exist_ok=False)
        meta = MetadataStore(folder / "meta.sqlite")
        meta.set_setting("config", {**config.__dict__})
        spec = (
            IndexSpec(kind="flat")
            if config.index in ("auto", "flat")
            else _empty_spec(config.index)
        )
        meta.set_setting("spec", spec.to_dict())
        vectors = VectorIndex(spec, config.dim, config.metric)
        return cls(folder, config, meta, vectors, CodeVotes(config.code_bytes))

    @classmethod
    def open(cls, folder: Path) -> Collection:
        if not (folder / "meta.sqlite").exists():
            raise NotFound(f"no collection at {folder}")
        meta = MetadataStore(folder / "meta.sqlite")
        known = {f.name for f in fields(CollectionConfig)}
        config = CollectionConfig(
            **{k: v for k, v in meta.get_setting("config").items() if k in known}
        )
        spec = IndexSpec.from_dict(meta.get_setting("spec"))
        vectors, seq = load_index(folder, meta, config, spec)
        collection = cls(folder, config, meta, vectors, build_votes(meta, config.code_bytes))
        collection._snapshot_seq = seq
        collection._vi, collection._applied_seq = replay(vectors, meta, config, folder.name, seq)
        with collection._writer:  # a re-plan abandoned at the last close starts again now
            collection._after_write()
        return collection

    def close(self) -> None:
        """Snapshot and close. A background re-plan still running is abandoned, not waited for:
        the index it would replace is complete, and the next open starts the re-plan again."""
        if self._closed:
            return
        try:
            with self._writer:
                self._closed = True  # a rebuild thread checks this before it installs
                self._rebuild_from = None
                self._snapshot_locked()
        finally:
            self.meta.close()
            self._closed = True

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _vectors(self, vectors: Any, what: str) -> np.ndarray:
        return as_vectors(vectors, self.config.dim, self.config.metric, self.name, what)

    # -- writes -----------------------------------------------------------------------------------
    def add(self, items: Sequence[NewItem]) -> list[str]:
        """Insert new items; an id that already exists is an error. Durable when this returns."""
        return self._write(items, replace=False)

    def upsert(self, items: Sequence[NewItem]) -> list[str]:
        """Insert or replace items by id. Durable when this returns."""
        return self._write(items, replace=True)

    def _write(self, items: Sequence[NewItem], replace: bool) -> list[str]:
        if not items:
            return []
        check_ids([item.external_id for item in items])
        try:
            rows = [np.asarray(item.vector, dtype=np.float32).ravel() for item in items]
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"vectors must be numbers: {exc}") from exc
        for item, row in zip(items, rows, strict=True):
            if row.shape[0] != self.config.dim:
                raise InvalidArgument(
                    f"vector of id {item.external_id!r} has dimension {row.shape[0]}; "
                    f"collection {self.name!r} has dimension {self.config.dim}"
                )
            check_uri(item.uri, item.external_id)
            metadata_text(item.metadata, item.external_id)
            if not isinstance(item.signature, bytes) or len(item.signature) > MAX_SIGNATURE_BYTES:
                raise InvalidArgument(
                    f"signature of id {item.external_id!r} must be bytes, at most "
                    f"{MAX_SIGNATURE_BYTES}"
                )
            self._check_codes(item)
        vectors = self._vectors(np.stack(rows), "vectors")
        clean = [dataclasses.replace(i, vector=v) for i, v in zip(items, vectors, strict=True)]
        with self._writer:
            added, removed = self.meta.upsert(clean, replace=replace)
            ids = np.array([internal for _, internal in added], dtype=np.int64)
            with self._lock.write():
                self._vi.remove(np.asarray(removed, dtype=np.int64))
                self._vi.add(ids, vectors)
                self._votes.remove(np.asarray(removed, dtype=np.int64))
                self._votes.add((int(i), item.codes) for i, item in zip(ids, clean, strict=True))
                self._applied_seq = self.meta.last_seq()
            self._after_write()
        return [external for external, _ in added]

    def delete(self, external_ids: Sequence[str], missing_ok: bool = False) -> int:
        """Delete by id; unknown ids raise :class:`NotFound` (nothing deleted) unless ``missing_ok``."""
        check_ids(external_ids)
        with self._writer:
            if not missing_ok:
                known = self.meta.items_by_external(external_ids, self.config.dim)
                missing = [i for i in external_ids if i not in known]
                if missing:
                    raise NotFound(f"unknown ids in collection {self.name!r}: {missing[:10]}")
            removed = self.meta.delete(external_ids)
            with self._lock.write():
                self._vi.remove(np.asarray(removed, dtype=np.int64))
                self._votes.remove(np.asarray(removed, dtype=np.int64))
                self._applied_seq = self.meta.last_seq()
            self._after_write()
        return len(removed)

    def _check_codes(self, item: NewItem) -> None:
        width = self.config.code_bytes
        codes = item.codes
        if not isinstance(codes, bytes) or len(codes) % width or len(codes) > MAX_CODES * width:
            raise InvalidArgument(
                f"codes of id {item.external_id!r} must be bytes: at most {MAX_CODES} codes of "
                f"{width} bytes each, concatenated"
            )

    def _after_write(self) -> None:
        """Snapshot every ``snapshot_every`` changes; rebuild HNSW with many tombstones; re-plan auto,
        and the code votes when their codes doubled past :data:`code_votes.IVF_FROM` (the
        rebuilds in the background: see :meth:`_start_rebuild`)."""
        vi = self._vi
        codes = self._votes.ntotal
        if vi.spec.kind == "hnsw" and len(vi.tombstones) > TOMBSTONE_REBUILD_FRACTION * max(
            1, vi.ntotal
        ):
            self._start_rebuild(vi.spec)
        elif codes >= IVF_FROM and codes >= 2 * max(self._votes.planned_for, IVF_FROM // 2):
            self._start_rebuild(None if self.config.index == "auto" else vi.spec)
        elif self.config.index == "auto":
            count = vi.live  # equals SQLite's count (checked on open); no COUNT(*) per write
            if count >= self.config.exact_below and count >= 2 * max(self._built_for, 1):
                self._start_rebuild(None)
        if self._applied_seq - self._snapshot_seq >= self.config.snapshot_every:
            self._snapshot_locked()

    def _start_rebuild(self, spec: IndexSpec | None) -> None:
        """Start a background rebuild (called under the writer lock, so no write is half done).

        The thread builds and tunes a fresh index from SQLite while reads and writes go on against
        the current one, then, under the writer lock, applies the changes logged after it started
        (internal ids are never reused, so each id is added or deleted at most once) and swaps it
        in. Until then the change log is kept from that point, even across snapshots.
        """
        if self._rebuild_thread is not None or self._closed:
            return
        self._rebuild_from = self.meta.last_seq()
        self._rebuild_thread = threading.Thread(
            target=self._rebuild_in_background,
            args=(spec, self._rebuild_from),
            name=f"rebuild-{self.name}",
            daemon=True,
        )
        self._rebuild_thread.start()

    def _rebuild_in_background(self, spec: IndexSpec | None, since: int) -> None:
        count = 0
        try:
            count = self.meta.count()
            started = time.perf_counter()
            spec = plan(spec, count, self.config)
            built: set[int] = set()
            fresh = build_from_sqlite(self.meta, self.config, spec, built)
            tune(fresh, self.meta, self.config, self.config.target_recall, only=built)
            coded: set[int] = set()
            votes = build_votes(self.meta, self.config.code_bytes, coded)
            with self._writer:
                if self._closed:
                    log.info(
                        "collection %s: closed during a rebuild; re-planned at next open", self.name
                    )
                    return
                changes = self.meta.changes_after(since)
                gone = [i for _, op, i in changes if op == "del" and i in built]
                new = [i for _, op, i in changes if op == "add" and i not in built]
                fresh.remove(np.asarray(gone, dtype=np.int64))
                ids, vectors = self.meta.vectors_for(new, self.config.dim)  # only the live ones
                fresh.add(ids, vectors)
                votes.remove(np.asarray([i for i in gone if i in coded], dtype=np.int64))
                votes.add(
                    self.meta.codes_for(
                        [i for _, op, i in changes if op == "add" and i not in coded]
                    )
                )
                self._rebuild_from = None
                self._install(fresh, count, votes)
                self._rebuild_thread = None
                self._after_write()  # grown past the next step meanwhile: plan again
            log.info(
                "collection %s: rebuilt as %s for %d vectors in %.1f s (%d changes caught up)",
                self.name,
                fresh.spec.kind,
                count,
                time.perf_counter() - started,
                len(changes),
            )
        except Exception:
            if self._closed:  # closed under it (its SQLite connection too): abandoned, not failed
                return
            log.exception(
                "collection %s: background index rebuild failed; the current index stays in use",
                self.name,
            )
            self._built_for = max(self._built_for, count)  # retry only after it doubles again
        finally:
            with self._writer:
                if self._rebuild_thread is threading.current_thread():
                    self._rebuild_from = None
                    self._rebuild_thread = None

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Block until no background rebuild is running (one may start another when the collection
        grew meanwhile); False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (thread := self._rebuild_thread) is not None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            thread.join(remaining)
        return True

    # -- reads ------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.meta.count()

    def set_space(self, space: str) -> None:
        """Record where this collection's vectors come from (see :class:`CollectionConfig`)."""
        with self._writer:
            self.config.space = space
            self.meta.set_setting("config", {**self.config.__dict__})

    def get(self, external_ids: Sequence[str]) -> list[Item]:
        check_ids(external_ids)
        found = self.meta.items_by_external(external_ids, self.config.dim)
        missing = [i for i in external_ids if i not in found]
        if missing:
            raise NotFound(f"unknown ids in collection {self.name!r}: {missing[:10]}")
        return [found[i] for i in external_ids]

    def missing(self, external_ids: Sequence[str]) -> list[str]:
        """Which of ``external_ids`` are not stored, in order."""
        check_ids(external_ids)
        found = self.meta.items_by_external(external_ids, self.config.dim)
        return [i for i in external_ids if i not in found]

    def known_hashes(
        self, hashes: Sequence[str], signed_only: bool = False, min_signature: int = 1
    ) -> set[str]:
        """Which content ``hashes`` are stored (with ``signed_only``: on items with a signature of
        at least ``min_signature`` bytes, so a caller whose signatures grew can refresh old ones)."""
        return self.meta.has_content_hashes(hashes, signed_only, min_signature)

    def search(
        self,
        queries: Any,
        k: int = 10,
        filter: tuple[str, Any] | None = None,
        params: dict[str, int] | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` hits for each query vector; ``filter=(field, value)`` keeps metadata equality matches."""
        check_k(k)
        q = self._vectors(queries, "query vectors")
        allowed = None
        if filter is not None:
            check_filter(*filter)
            allowed = self.meta.ids_matching(*filter)
            if len(allowed) == 0:
                return [[] for _ in range(len(q))]
            if len(allowed) <= EXACT_FILTER_MAX:
                return self._exact_search(q, k, allowed)
        with self._lock.read():
            scores, ids = self._vi.search(q, k, allowed=allowed, params=params)
        return to_hits(self.meta, scores, ids)

    def vote(
        self,
        codes: Any,
        top: int,
        max_distance: int,
        ratio: float,
        filter: tuple[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``top`` items whose stored codes are nearest to the most of ``codes`` (``(q,
        code_bytes)`` uint8), as hits whose ``score`` is that number of votes
        (:meth:`index.code_votes.CodeVotes.vote`), most first; ``filter`` as in :meth:`search`."""
        check_k(top)
        allowed = None
        if filter is not None:
            check_filter(*filter)
            allowed = self.meta.ids_matching(*filter)
            if len(allowed) == 0:
                return []
        with self._lock.read():
            ids, votes = self._votes.vote(
                np.asarray(codes, dtype=np.uint8), top, max_distance, ratio, allowed
            )
        if not len(ids):
            return []
        return to_hits(self.meta, votes[None].astype(np.float32), ids[None])[0]

    def search_by_id(
        self, external_id: str, k: int = 10, filter: tuple[str, Any] | None = None
    ) -> list[Hit]:
        """ "More like this": neighbours of a stored item, itself excluded."""
        return more_like(self, external_id, k, filter)

    def neighbour_ids(self, vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's raw answer for whole-collection jobs (``index.neighbours``): ``(scores, internal
        ids)``, each ``(q, k)``, id -1 and score NaN where fewer exist."""
        q = self._vectors(vectors, "query vectors")
        with self._lock.read():
            return self._vi.search(q, k)

    def vector_batches(self, batch: int = 4096):
        """Every stored ``(internal ids (n,), vectors (n, dim))``, in id order, ``batch`` at a time."""
        return self.meta.iter_vectors(self.config.dim, batch)

    def items_by_internal(self, ids: Sequence[int]) -> dict[int, Item]:
        """Stored items (without vectors) by internal id; ids since deleted are left out."""
        return self.meta.items_by_internal(list(ids))

    def same_content(self) -> list[list[int]]:
        """Internal ids of items sharing a content hash (exact copies), one list per hash."""
        return self.meta.same_content()

    def _exact_search(self, q: np.ndarray, k: int, allowed: np.ndarray) -> list[list[Hit]]:
        ids, vectors = self.meta.vectors_for(allowed.tolist(), self.config.dim)
        return to_hits(self.meta, *exact_search(q, ids, vectors, k, self.config.metric))

    def stats(self) -> dict[str, Any]:
        vi = self._vi
        return {
            "name": self.name,
            "dim": self.config.dim,
            "metric": self.config.metric,
            "count": self.count(),
            "index": vi.spec.to_dict(),
            "index_vectors": vi.ntotal,
            "tombstones": len(vi.tombstones),
            "applied_seq": self._applied_seq,
            "snapshot_seq": self._snapshot_seq,
            "votes": self._votes.stats(),
            "index_bytes": _file_size(self.folder / "index.faiss"),
            "sqlite_bytes": _file_size(self.meta.path),
        }

    # -- maintenance ------------------------------------------------------------------------------
    def snapshot(self) -> None:
        with self._writer:
            self._snapshot_locked()

    def _snapshot_locked(self, force: bool = False) -> None:
        """Write the index to disk; ``force`` even when no change came since the last snapshot (a
        rebuilt index holds the same items as the snapshot, in a different structure)."""
        if (
            not force
            and self._applied_seq == self._snapshot_seq
            and (self.folder / "index.faiss").exists()
        ):
            return
        with self._lock.read():
            data = self._vi.serialize()
            seq = self._applied_seq
            header = {
                "spec": self._vi.spec.to_dict(),
                "dim": self.config.dim,
                "metric": self.config.metric,
                "count": self._vi.live,
                "tombstones": sorted(self._vi.tombstones),
                "written": time.time(),
            }
        try:
            write_snapshot(self.folder / "index.faiss", seq, header, data)
        except OSError as exc:
            # SQLite still has everything: the next open replays from the previous snapshot.
            raise StorageFailure(
                f"could not write the index snapshot ({exc}); no data was lost"
            ) from exc
        self._snapshot_seq = seq
        # A background rebuild still needs the changes logged since it started.
        keep_from = self._rebuild_from
        self.meta.forget_changes_through(seq if keep_from is None else min(seq, keep_from))

    def rebuild(
        self, kind: str | None = None, target_recall: float | None = None
    ) -> dict[str, Any]:
        """Rebuild (and compact) the FAISS index from SQLite; ``kind=None`` re-plans from the data."""
        if kind is not None and kind != "auto" and kind not in KINDS:
            raise InvalidArgument(f"index must be 'auto' or one of {KINDS}, got {kind!r}")
        self.wait_for_rebuild()
        with self._writer:
            spec = None if kind in (None, "auto") else _empty_spec(kind)
            return self._rebuild_locked(spec, target_recall)

    def _rebuild_locked(
        self, spec: IndexSpec | None, target_recall: float | None = None
    ) -> dict[str, Any]:
        count = self.meta.count()
        spec = plan(spec, count, self.config)
        started = time.perf_counter()
        fresh = build_from_sqlite(self.meta, self.config, spec)
        tuned = tune(fresh, self.meta, self.config, target_recall or self.config.target_recall)
        self._install(fresh, count, build_votes(self.meta, self.config.code_bytes))
        return {"spec": fresh.spec.to_dict(), "seconds": time.perf_counter() - started, **tuned}

    def _install(self, fresh: VectorIndex, count: int, votes: CodeVotes) -> None:
        """Swap in ``fresh`` and ``votes``, which hold exactly SQLite's vectors and codes now
        (writer lock held)."""
        with self._lock.write():
            self._vi = fresh
            self._votes = votes
            self._applied_seq = self.meta.last_seq()
        self.meta.set_setting("spec", fresh.spec.to_dict())
        self.meta.set_setting("built_for", count)
        self._built_for = count
        self._snapshot_locked(force=True)

    def integrity(self) -> dict[str, Any]:
        """SQLite's integrity check and whether FAISS holds exactly SQLite's live vectors."""
        return {
            "sqlite": self.meta.integrity_check(),
            "sqlite_count": self.meta.count(),
            "index_count": self._vi.live,
        }


def more_like(
    collection: Any, external_id: str, k: int, filter: tuple[str, Any] | None
) -> list[Hit]:
    """The ``k`` nearest neighbours of the stored item ``external_id`` in ``collection`` (anything
    with ``get`` and ``search``: a collection or a sharded one), the item itself left out."""
    check_k(k)
    item = collection.get([external_id])[0]
    hits = collection.search(item.vector, min(k + 1, MAX_K), filter)[0]
    return [h for h in hits if h.external_id != external_id][:k]


def _empty_spec(kind: str) -> IndexSpec:
    return IndexSpec(kind=kind)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
