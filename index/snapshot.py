"""Atomic, checksummed snapshots of a FAISS index.

File layout: ``MAGIC`` + 8-byte little-endian header length + JSON header + index bytes. The header
holds the last applied change ``seq``, the index spec, dimension, metric, vector count, HNSW
tombstones and the sha256 of the index bytes. Writing goes to a temporary file in the same folder,
then fsync, rename over the old snapshot, fsync of the folder: a crash leaves either the old or the
new snapshot, never a torn one. A file that fails any check raises :class:`CorruptSnapshot` and the
collection rebuilds from SQLite.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC)
            handle.write(struct.pack("<Q", len(encoded)))
            handle.write(encoded)
            handle.write(index_bytes)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
