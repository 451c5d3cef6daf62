"""The SQLite half of a collection: the source of truth for ids, vectors and metadata.

One database per collection, in WAL mode with ``synchronous=FULL``: a write is durable once its
transaction commits, and readers never wait for a writer's fsync. Every mutation also appends to a
``changes`` log (``seq``, op, internal id) in the same transaction; the FAISS snapshot records the
last ``seq`` it contains, and opening a collection replays the changes after it.

Internal ids are SQLite ``AUTOINCREMENT`` rowids: never reused, so a deleted id can never come
back as a different item (HNSW tombstones rely on this).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simclr_search.index.checks import metadata_text
from simclr_search.index.errors import InvalidArgument, StorageFailure

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    external_id TEXT NOT NULL UNIQUE,
    uri TEXT NOT NULL DEFAULT '',
    content_hash TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    vector BLOB NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    signature BLOB,
    codes BLOB
);
CREATE INDEX IF NOT EXISTS items_content_hash ON items(content_hash);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'del')),
    item_id INTEGER NOT NULL
);
"""
#: The columns an :class:`Item` is read from, by name: a database that gained columns over
#: versions has them in another order than a new one.
_ITEM_COLUMNS = "id, external_id, uri, content_hash, metadata, vector, created, updated, signature"
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SCALAR = (str, int, float, bool)


@dataclass(frozen=True)
class Item:
    """A stored item. ``vector`` is float32 ``(dim,)``, as indexed (unit length for cosine)."""

    id: int
    external_id: str
    uri: str
    content_hash: str
    metadata: dict[str, Any]
    vector: np.ndarray
    created: float
    updated: float
    signature: bytes = b""


@dataclass(frozen=True)
class NewItem:
    """An item to write. ``signature`` is an opaque short byte string the caller stores beside the
    vector and gets back with each search hit (the server keeps a tiny thumbnail there to order near
    ties); empty when there is none. ``codes`` are fixed-width binary codes the collection votes
    with (``index.code_votes``), concatenated; empty for none."""

    external_id: str
    vector: np.ndarray
    uri: str = ""
    content_hash: str = ""
    metadata: dict[str, Any] | None = None
    signature: bytes = b""
    codes: bytes = b""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database written by an older version up to :data:`SCHEMA`: ``signature`` and
    ``codes`` came later (their rows read back as none). ``ALTER TABLE ... ADD COLUMN`` appends, so
    positional reads of the older columns are unchanged."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
    for column in ("signature", "codes"):
        if column in columns:
            continue
        try:
            conn.execute(f"ALTER TABLE items ADD COLUMN {column} BLOB")
        except sqlite3.OperationalError as exc:  # another process opening the store added it first
            if "duplicate column" not in str(exc):
                raise


def _storage_error(exc: sqlite3.Error) -> Exception:
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(
        word in text for word in ("full", "disk", "readonly", "read-only", "i/o", "unable to open")
    ):
        return StorageFailure(
            f"the index's disk refused the write ({exc}); nothing was acknowledged"
        )
    return exc


class MetadataStore:
    """SQLite access for one collection: one writer connection, one reader connection per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._writer = _connect(self.path)
            self._writer.executescript(SCHEMA)
            _add_missing_columns(self._writer)
        except sqlite3.Error as exc:
            raise _storage_error(exc) from exc
        self._local = threading.local()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    # -- connections ------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                self._readers.append((threading.current_thread(), conn))
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close the writer and every reader no other thread can be in the middle of using: the
        calling thread's and those of threads that have ended. Why: closing a SQLite connection
        while another thread runs a query on it crashes the process (a background index rebuild
        still reading when the collection closes did, in CI). A live thread's reader is left to
        it: its next query raises, and the connection closes when that thread ends or this store
        is garbage-collected."""
        with self._readers_lock:
            self._closed = True
            me = threading.current_thread()
            for thread, conn in self._readers:
                if thread is me or not thread.is_alive():
                    conn.close()
            self._readers.clear()
        self._writer.close()

    # -- settings ---------------------------------------------------------------------------------
    def get_setting(self, key: str) -> Any | None:
        row = self._reader().execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_setting(self, key: str, value: Any) -> None:
        self._write(
            lambda c: c.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )
        )

    # -- writes -----------------------------------------------------------------------------------
    def _write(self, fn):
        """Run ``fn(conn)`` in one IMMEDIATE transaction; durable when this returns."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself after some I/O errors
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _storage_error(exc) from exc
        return result

    def upsert(
        self, items: Sequence[NewItem], replace: bool
    ) -> tuple[list[tuple[str, int]], list[int]]:
        """Insert ``items`` (replacing same external ids if ``replace``) in one transaction.

        Returns ``([(external_id, new internal id)], [internal ids removed])``.
        """
        now = time.time()

        def fn(conn: sqlite3.Connection):
            # One lookup and one change-log statement per batch, one INSERT per item (its new id).
            external = [item.external_id for item in items]
            existing: dict[str, int] = {}
            for chunk in _chunks(external, 900):
                marks = ",".join("?" * len(chunk))
                existing.update(
                    conn.execute(
                        f"SELECT external_id, id FROM items WHERE external_id IN ({marks})", chunk
                    ).fetchall()
                )
            if existing and not replace:
                first = next(i for i in external if i in existing)
                raise InvalidArgument(f"id {first!r} already exists; use upsert to replace it")
            removed = [existing[i] for i in external if i in existing]
            if removed:
                conn.executemany("DELETE FROM items WHERE id = ?", [(r,) for r in removed])
                conn.executemany(
                    "INSERT INTO changes(op, item_id) VALUES ('del', ?)", [(r,) for r in removed]
                )
            added = []
            for item in items:
                cursor = conn.execute(
                    "INSERT INTO items(external_id, uri, content_hash, metadata, vector, created,"
                    " updated, signature, codes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.external_id,
                        item.uri,
                        item.content_hash,
                        metadata_text(item.metadata, item.external_id),
                        np.ascontiguousarray(item.vector, dtype=np.float32).tobytes(),
                        now,
                        now,
                        item.signature or None,
                        item.codes or None,
                    ),
                )
                added.append((item.external_id, cursor.lastrowid))
            conn.executemany(
                "INSERT INTO changes(op, item_id) VALUES ('add', ?)", [(i,) for _, i in added]
            )
            return added, removed

        return self._write(fn)

    def delete(self, external_ids: Sequence[str]) -> list[int]:
        """Delete by external id in one transaction; returns the internal ids removed (unknown ids skipped)."""

        def fn(conn: sqlite3.Connection):
            removed = []
            for external_id in external_ids:
                row = conn.execute(
                    "SELECT id FROM items WHERE external_id = ?", (external_id,)
                ).fetchone()
                if row is None:
                    continue
                conn.execute("DELETE FROM items WHERE id = ?", (row[0],))
                conn.execute("INSERT INTO changes(op, item_id) VALUES ('del', ?)", (row[0],))
                removed.append(row[0])
            return removed

        return self._write(fn)

    def forget_changes_through(self, seq: int) -> None:
        """Drop change-log entries a durable snapshot already contains."""
        self._write(lambda c: c.execute("DELETE FROM changes WHERE seq <= ?", (seq,)))

    # -- reads ------------------------------------------------------------------------------------
    def last_seq(self) -> int:
        row = (
            self._reader()
            .execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
            .fetchone()
        )
        return int(row[0]) if row else 0

    def changes_after(self, seq: int) -> list[tuple[int, str, int]]:
        return (
            self._reader()
            .execute("SELECT seq, op, item_id FROM changes WHERE seq > ? ORDER BY seq", (seq,))
            .fetchall()
        )

    def count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def vectors_for(self, ids: Iterable[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids_found (n,), vectors (n, dim))`` for the internal ids that still exist."""
        found, vectors = [], []
        for chunk in _chunks(list(ids), 900):
            marks = ",".join("?" * len(chunk))
            for row_id, blob in self._reader().execute(
                f"SELECT id, vector FROM items WHERE id IN ({marks})", chunk
            ):
                found.append(row_id)
                vectors.append(blob)
        return _unpack(found, vectors, dim)

    def iter_vectors(
        self, dim: int, batch: int = 50_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored vector in id order, in batches of ``(ids, vectors)``."""
        last = 0
        while True:
            rows = (
                self._reader()
                .execute(
                    "SELECT id, vector FROM items WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                )
                .fetchall()
            )
            if not rows:
                return
            last = rows[-1][0]
            yield _unpack([r[0] for r in rows], [r[1] for r in rows], dim)

    def iter_codes(self, batch: int = 10_000) -> Iterator[list[tuple[int, bytes]]]:
        """Every stored ``(internal id, codes)`` of items that have codes, in id order, in batches."""
        last = 0
        while True:
            rows = (
                self._reader()
                .execute(
                    "SELECT id, codes FROM items WHERE id > ? AND codes IS NOT NULL"
                    " ORDER BY id LIMIT ?",
                    (last, batch),
                )
                .fetchall()
            )
            if not rows:
                return
            last = rows[-1][0]
            yield [(int(i), bytes(c)) for i, c in rows]

    def codes_for(self, ids: Iterable[int]) -> list[tuple[int, bytes]]:
        """``(internal id, codes)`` of those ``ids`` that still exist and have codes."""
        out = []
        for chunk in _chunks(list(ids), 900):
            marks = ",".join("?" * len(chunk))
            out += [
                (int(i), bytes(c))
                for i, c in self._reader().execute(
                    f"SELECT id, codes FROM items WHERE id IN ({marks}) AND codes IS NOT NULL",
                    chunk,
                )
            ]
        return out

    def sample_vectors(self, size: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A uniform random sample of ``size`` stored vectors (for IVF training), seeded."""
        all_ids = np.fromiter(
            (r[0] for r in self._reader().execute("SELECT id FROM items")), dtype=np.int64
        )
        pick = np.random.default_rng(seed).choice(
            len(all_ids), size=min(size, len(all_ids)), replace=False
        )
        return self.vectors_for(all_ids[np.sort(pick)].tolist(), dim)

    def items_by_internal(
        self, ids: Iterable[int], with_vectors: bool = False, dim: int = 0
    ) -> dict[int, Item]:
        out: dict[int, Item] = {}
        for chunk in _chunks(list(ids), 900):
            marks = ",".join("?" * len(chunk))
            rows = (
                self._reader()
                .execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({marks})", chunk)
                .fetchall()
            )
            for row in rows:
                out[row[0]] = _item(row, with_vectors, dim)
        return out

    def items_by_external(self, external_ids: Sequence[str], dim: int) -> dict[str, Item]:
        out: dict[str, Item] = {}
        for chunk in _chunks(list(external_ids), 900):
            marks = ",".join("?" * len(chunk))
            rows = (
                self._reader()
                .execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE external_id IN ({marks})", chunk)
                .fetchall()
            )
            for row in rows:
                out[row[1]] = _item(row, True, dim)
        return out

    def has_content_hashes(
        self, hashes: Sequence[str], signed_only: bool = False, min_signature: int = 1
    ) -> set[str]:
        """The ``hashes`` some stored item has; with ``signed_only``, only items with a signature
        of at least ``min_signature`` bytes."""
        found: set[str] = set()
        signed = f" AND length(signature) >= {int(min_signature)}" if signed_only else ""
        for chunk in _chunks([h for h in hashes if h], 900):
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._reader().execute(
                    f"SELECT content_hash FROM items WHERE content_hash IN ({marks}){signed}", chunk
                )
            )
        return found

    def same_content(self) -> list[list[int]]:
        """Internal ids of the items that share a content hash, one list per hash (by id)."""
        rows = self._reader().execute(
            "SELECT group_concat(id) FROM (SELECT id, content_hash FROM items "
            "WHERE content_hash != '' ORDER BY id) GROUP BY content_hash HAVING count(*) > 1"
        )
        return [sorted(int(i) for i in r[0].split(",")) for r in rows]

    def ids_matching(self, field: str, value: Any) -> np.ndarray:
        """Internal ids whose metadata has ``field`` (dotted path) equal to ``value``. A row whose
        metadata SQLite cannot parse (NaN written by a release before writes were checked) matches
        nothing rather than failing the whole search."""
        check_filter(field, value)
        sql_value = int(value) if isinstance(value, bool) else value
        rows = (
            self._reader()
            .execute(
                "SELECT id FROM items"
                " WHERE CASE WHEN json_valid(metadata) THEN json_extract(metadata, ?) END = ?",
                (f"$.{field}", sql_value),
            )
            .fetchall()
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def integrity_check(self) -> str:
        return self._reader().execute("PRAGMA integrity_check").fetchone()[0]


def check_filter(field: str, value: Any) -> None:
    if not _FIELD.match(field or ""):
        raise InvalidArgument(
            f"filter field {field!r} must be a dotted name of letters, digits and underscores"
        )
    if not isinstance(value, _SCALAR):
        raise InvalidArgument(f"filter value for {field!r} must be a string, number or boolean")


def _item(row: tuple, with_vector: bool, dim: int) -> Item:
    vector = (
        np.frombuffer(row[5], dtype=np.float32).copy() if with_vector else np.empty(0, np.float32)
    )
    if with_vector and dim and vector.shape[0] != dim:
        raise ValueError(
            f"stored vector of id {row[1]!r} has {vector.shape[0]} values, expected {dim}"
        )
    signature = bytes(row[8]) if row[8] is not None else b""  # NULL: stored without one
    return Item(
        row[0], row[1], row[2], row[3], json.loads(row[4]), vector, row[6], row[7], signature
    )


def _unpack(ids: list[int], blobs: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
    if not ids:
        return np.empty(0, np.int64), np.empty((0, dim), np.float32)
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
    return np.asarray(ids, dtype=np.int64), vectors


def _chunks(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
