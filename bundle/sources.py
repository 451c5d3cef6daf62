"""Find images in a user's library: folders (recursively) and ``.tar`` / ``.tar.gz`` archives.

Shared by training (the decoded-image cache) and serving (``simclr index``); standard library only.

A library is unlabeled; an image's *label* is the name of the folder that holds it and is used only
for evaluation (kNN monitor, linear probe) when such class folders exist. An image at the top level
of the library has no label.

Archives are read sequentially (gzip allows nothing else), so the unit this module yields is
``(record, bytes)``: the caller decodes, possibly in worker processes.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from simclr_search.bundle.tar_reader import READ_ERRORS, NotSimpleTar, iter_members, open_tar

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif"}
    | {".heic", ".heif", ".hif"}
)
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


def _label_of(name: str) -> str | None:
    """``_label_for`` of a member name, without building a path object for the usual plain names."""
    if "//" in name or "/./" in name or name.startswith("./") or name.endswith("/"):
        return _label_for(PurePosixPath(name))
    parts = name.rsplit("/", 2)
    return parts[-2] if len(parts) > 1 else None


def _has_image_extension(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: str) -> Iterator[str]:
    """Image files and archives under the folder ``root`` as path strings, sorted for reproducibility
    (strings, not ``Path`` objects: at ~50k files the pathlib overhead showed in indexing profiles)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            lower = name.lower()
            if os.path.splitext(lower)[1] in IMAGE_EXTENSIONS or lower.endswith(ARCHIVE_SUFFIXES):
                yield os.path.join(dirpath, name)


def list_source_files(root: str | os.PathLike[str]) -> list[Path]:
    """Image files and archives under ``root`` (or ``root`` itself), sorted for reproducibility."""
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(f"image library not found: {root_path}")
    if root_path.is_file():
        return [root_path]
    return [Path(path) for path in _walk(str(root_path))]


def iter_image_bytes(
    root: str | os.PathLike[str], skipped: list[tuple[str, str]] | None = None
) -> Iterator[tuple[ImageRecord, bytes]]:
    """Yield ``(record, encoded bytes)`` for every image under ``root``.

    Files that cannot be read are appended to ``skipped`` as ``(uri, reason)`` instead of raising,
    so a single bad file never stops a run over a large library. Decoding is not done here.
    """
    skipped = skipped if skipped is not None else []
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(f"image library not found: {root_path}")
    if root_path.is_file():
        if is_archive(root_path):
            yield from _iter_archive(root_path, skipped)
        else:
            data = _read_file(str(root_path), skipped)
            if data is not None:
                yield ImageRecord(str(root_path), None), data
        return
    prefix = len(str(root_path)) + 1
    for path in _walk(str(root_path)):
        if path.lower().endswith(ARCHIVE_SUFFIXES):
            yield from _iter_archive(Path(path), skipped)
            continue
        data = _read_file(path, skipped)
        if data is None:
            continue
        relative = path[prefix:].replace(os.sep, "/")
        parts = relative.rsplit("/", 2)
        yield ImageRecord(path, parts[-2] if len(parts) > 1 else None), data


def _read_file(path: str, skipped: list[tuple[str, str]]) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_FILE_BYTES:
                skipped.append((path, f"file is {size} bytes, over {MAX_FILE_BYTES}"))
                return None
            return handle.read()
    except OSError as exc:
        skipped.append((path, f"unreadable: {exc}"))
        return None


def iter_archive_bytes(
    uri: str, data: bytes, skipped: list[tuple[str, str]]
) -> Iterator[tuple[ImageRecord, bytes]]:
    """The images of an archive already read into memory (from an object store, where it is read
    whole: keep such archives to WebDataset-sized shards), as from a file; uris ``uri::member``."""
    yield from _iter_archive(uri, skipped, data)


def _iter_archive(
    path: Path | str, skipped: list[tuple[str, str]], data: bytes | None = None
) -> Iterator[tuple[ImageRecord, bytes]]:
    """Plain and gzip tars through ``bundle.tar_reader`` (a few us a member); anything else, and
    tars whose first header it cannot read, through ``tarfile`` (which also reads bz2 and xz).
    ``data``: the archive's bytes, when they are not in the file ``path`` names."""
    try:
        stream = open_tar(Path(path) if data is None else io.BytesIO(data))
    except NotSimpleTar:
        yield from _iter_archive_tarfile(path, skipped, data)
        return
    except OSError as exc:
        skipped.append((str(path), f"unreadable archive: {exc}"))
        return

    def wanted(name: str, size: int) -> bool:
        return size <= MAX_FILE_BYTES and _has_image_extension(name)

    with stream:
        try:
            for name, size, data in iter_members(stream, wanted):
                uri = f"{path}::{name}"
                if data is None:
                    if _has_image_extension(name):
                        skipped.append((uri, f"member is {size} bytes, over {MAX_FILE_BYTES}"))
                    continue
                yield ImageRecord(uri, _label_of(name)), data
        except READ_ERRORS as exc:
            skipped.append((str(path), f"archive truncated or corrupt: {exc}"))


def _iter_archive_tarfile(
    path: Path | str, skipped: list[tuple[str, str]], data: bytes | None = None
) -> Iterator[tuple[ImageRecord, bytes]]:
    try:
        # closed by the with below
        archive = (
            tarfile.open(path, mode="r:*")  # noqa: SIM115
            if data is None
            else tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115
        )
    except (*READ_ERRORS, tarfile.TarError) as exc:  # a gzip cut short raises EOFError here
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
        except (*READ_ERRORS, tarfile.TarError) as exc:
            skipped.append((str(path), f"archive truncated or corrupt: {exc}"))


def read_uri(uri: str) -> bytes:
    """The bytes behind an :class:`ImageRecord` uri: a file, or ``archive::member``."""
    archive, sep, member = uri.partition("::")
    if not sep:
        return Path(uri).read_bytes()
    with tarfile.open(archive, "r:*") as tar:
        handle = tar.extractfile(member)
        if handle is None:
            raise OSError(f"{member} is not a file in {archive}")
        return handle.read()
