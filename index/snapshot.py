"""Atomic, checksummed snapshots of a FAISS index.

File layout: ``MAGIC`` + 8-byte little-endian header length + JSON header + index bytes. The header
holds the last applied change ``seq``, the index spec, dimension, metric, vector count, HNSW
tombstones and the sha256 of the index bytes. Written with ``simclr_search.files.atomic_file``
(temporary file, fsync, rename, fsync of the folder): a crash leaves either the old or the new
snapshot, never a torn one. A file that fails any check raises :class:`CorruptSnapshot` and the
collection rebuilds from SQLite.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simclr_search.files import atomic_file

MAGIC = b"SIMCLRIDX1\n"


class CorruptSnapshot(Exception):
    """The snapshot file is missing, truncated, or fails its checksum."""


@dataclass
class Snapshot:
    seq: int
    header: dict[str, Any]
    index_bytes: bytes


def write_snapshot(path: Path, seq: int, header: dict[str, Any], index_bytes: bytes) -> None:
    header = {
        **header,
        "seq": seq,
        "sha256": hashlib.sha256(index_bytes).hexdigest(),
        "size": len(index_bytes),
    }
    encoded = json.dumps(header).encode()
    with atomic_file(path, mode=None) as handle:
        handle.write(MAGIC)
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        handle.write(index_bytes)


def read_snapshot(path: Path) -> Snapshot:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise CorruptSnapshot(f"{path} does not exist") from exc
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise CorruptSnapshot(f"{path} is not an index snapshot")
    offset = len(MAGIC)
    (length,) = struct.unpack("<Q", data[offset : offset + 8])
    offset += 8
    try:
        header = json.loads(data[offset : offset + length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptSnapshot(f"{path}: unreadable header") from exc
    body = data[offset + length :]
    if len(body) != header.get("size") or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise CorruptSnapshot(f"{path}: checksum mismatch (truncated or damaged)")
    return Snapshot(int(header["seq"]), header, body)
