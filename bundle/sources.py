"""Find images in a user's library: folders (recursively) and ``.tar`` / ``.tar.gz`` archives.

Shared by training (the decoded-image cache) and serving (``simclr index``); standard library only.

A library is unlabeled; an image's *label* is the name of the folder that holds it and is used only
for evaluation (kNN monitor, linear probe) when such class folders exist. An image at the top level
of the library has no label.

Archives are read sequentially (gzip allows nothing else), so the unit this module yields is
``(record, bytes)``: the caller decodes, possibly in worker processes.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Files larger than this are not images we want to hold in memory; they are skipped and reported.
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ImageRecord:
    """Where one image came from.

    Attributes:
        uri: a file path, or ``archive_path::member`` for an image inside an archive.
        label: the name of the enclosing folder, or ``None`` at the top level.
    """

    uri: str
    label: str | None


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _label_for(relative: PurePosixPath) -> str | None:
    return relative.parent.name if len(relative.parts) > 1 else None


def _has_image_extension(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def list_source_files(root: str | os.PathLike[str]) -> list[Path]:
    """Image files and archives under ``root`` (or ``root`` itself), sorted for reproducibility."""
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(f"image library not found: {root_path}")
    if root_path.is_file():
        return [root_path]
    found = []
    for dirpath, dirnames, filenames in os.walk(root_path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if _has_image_extension(name) or is_archive(path):
                found.append(path)
    return found


def iter_image_bytes(
    root: str | os.PathLike[str], skipped: list[tuple[str, str]] | None = None
) -> Iterator[tuple[ImageRecord, bytes]]:
    """Yield ``(record, encoded bytes)`` for every image under ``root``.

    Files that cannot be read are appended to ``skipped`` as ``(uri, reason)`` instead of raising,
    so a single bad file never stops a run over a large library. Decoding is not done here.
    """
    skipped = skipped if skipped is not None else []
    root_path = Path(root)
    for path in list_source_files(root_path):
        if is_archive(path):
            yield from _iter_archive(path, skipped)
            continue
        relative = (
            PurePosixPath(path.relative_to(root_path).as_posix()) if path != root_path else None
        )
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                skipped.append((str(path), f"file is {size} bytes, over {MAX_FILE_BYTES}"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            skipped.append((str(path), f"unreadable: {exc}"))
            continue
        label = _label_for(relative) if relative is not None else None
        yield ImageRecord(str(path), label), data


def _iter_archive(
    path: Path, skipped: list[tuple[str, str]]
) -> Iterator[tuple[ImageRecord, bytes]]:
    try:
        archive = tarfile.open(path, mode="r:*")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as exc:
        skipped.append((str(path), f"unreadable archive: {exc}"))
        return
    with archive:
        try:
            for member in archive:
                if not member.isfile() or not _has_image_extension(member.name):
                    continue
                uri = f"{path}::{member.name}"
                if member.size > MAX_FILE_BYTES:
                    skipped.append((uri, f"member is {member.size} bytes, over {MAX_FILE_BYTES}"))
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    skipped.append((uri, "not extractable"))
                    continue
                yield ImageRecord(uri, _label_for(PurePosixPath(member.name))), handle.read()
        except (OSError, tarfile.TarError, EOFError) as exc:
            skipped.append((str(path), f"archive truncated or corrupt: {exc}"))
