"""Crash-safe file writes, shared by checkpoints, bundle manifests and index snapshots.

A file is written to a temporary name in its own folder, flushed and fsynced, renamed over the
target (atomic on POSIX), and the folder is fsynced so the rename itself survives a power cut: a
reader sees the old file or the new one, never a torn one, and a failed write leaves no litter.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or creation inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int | None = 0o644) -> Iterator[BinaryIO]:
    """``with atomic_file(p) as handle: handle.write(...)``: ``p`` is replaced only if the block
    finishes. ``mode``: the file's permission bits (None keeps the temporary file's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int | None = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_file(path, mode) as handle:
        handle.write(data)
