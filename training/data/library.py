"""An image library decoded once into a uint8 array on disk (the decoded-image cache).

Why: a JPEG decode costs more than the batched augmentation of the same image, and SimCLR visits
every image many times. Decoding once (in parallel worker processes) into a memory-mapped
``(N, S, S, 3)`` uint8 file makes each later epoch a memory copy. ``benchmarks/bench_data.py``
measures both paths.

The cache key covers the library's files (path, size, mtime), the decode size and the decoder
version, so editing the library invalidates it. The cache is written to a temporary folder and
renamed into place, so a killed process never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simclr_search.bundle.preprocess import ImageDecodeError, decode_square
from simclr_search.bundle.sources import ImageRecord, iter_image_bytes, list_source_files

DECODER_VERSION = 2  # 2: EXIF orientation applied, 16-bit scaled, alpha on white


def default_cache_dir() -> Path:
    return Path(os.environ.get("SIMCLR_CACHE_DIR", Path.home() / ".cache" / "simclr-search"))


@dataclass
class ImageLibrary:
    """Decoded images plus where they came from.

    Attributes:
        images: ``(N, S, S, 3)`` uint8, usually a read-only memmap.
        uris: N source URIs.
        labels: ``(N,)`` int64 class index, ``-1`` where the image has no class folder.
        classes: class names, indexed by ``labels``.
        skipped: ``(uri, reason)`` for every file that could not be used.
    """

    images: np.ndarray
    uris: list[str]
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def has_labels(self) -> bool:
        return bool(len(self.classes) >= 2 and (self.labels >= 0).all())

    def skipped_summary(self) -> str:
        if not self.skipped:
            return "0 files skipped"
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        return f"{len(self.skipped)} files skipped ({detail}); first: {self.skipped[0][0]}"


def _fingerprint(root: Path, size: int) -> str:
    digest = hashlib.sha256(f"v{DECODER_VERSION}|{size}|{root.resolve()}".encode())
    for path in list_source_files(root):
        stat = path.stat()
        digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _decode_job(job: tuple[int, bytes, int]) -> tuple[int, np.ndarray | None, str]:
    index, data, size = job
    try:
        return index, decode_square(data, size), ""
    except ImageDecodeError as exc:
        return index, None, str(exc)


def _decoded(
    items: Iterable[tuple[ImageRecord, bytes]], size: int, workers: int
) -> Iterator[tuple[ImageRecord, np.ndarray | None, str]]:
    records: dict[int, ImageRecord] = {}

    def jobs() -> Iterator[tuple[int, bytes, int]]:
        for i, (record, data) in enumerate(items):
            records[i] = record
            yield i, data, size

    if workers <= 0:
        results: Iterable = map(_decode_job, jobs())
        for index, array, error in results:
            yield records.pop(index), array, error
        return
    # Not "fork": a parent that already ran torch (OpenMP threads) can leave forked children
    # spinning forever. The forkserver child imports only this module (numpy, Pillow).
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        for index, array, error in pool.imap(_decode_job, jobs(), chunksize=64):
            yield records.pop(index), array, error


def build_library(
    root: str | os.PathLike[str],
    size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> ImageLibrary:
    """Decode every image under ``root`` to ``size x size`` (cached) and return the library.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no usable image was found (the message lists why files were skipped).
    """
    root_path = Path(root)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _fingerprint(root_path, size)
    target = cache_root / f"decoded-{key}"
    if (target / "meta.json").exists():
        return _open(target)
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".decoded-{key}-", dir=cache_root))
    try:
        _write(root_path, size, staging, workers, progress)
        try:
            staging.rename(target)
        except OSError:  # another process won the race; its cache is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _open(target)


def _write(root: Path, size: int, out: Path, workers: int, progress: bool) -> None:
    skipped: list[tuple[str, str]] = []
    uris: list[str] = []
    label_names: list[str | None] = []
    bar = tqdm(desc=f"decoding {root.name}", unit="img", disable=not progress, mininterval=1.0)
    with open(out / "images.u8", "wb") as raw:
        for record, array, error in _decoded(iter_image_bytes(root, skipped), size, workers):
            bar.update(1)
            if array is None:
                skipped.append((record.uri, error))
                continue
            raw.write(array.tobytes())
            uris.append(record.uri)
            label_names.append(record.label)
        raw.flush()
        os.fsync(raw.fileno())
    bar.close()
    if not uris:
        reasons = "; ".join(f"{u}: {r}" for u, r in skipped[:5]) or "no image files found"
        raise ValueError(f"no usable images under {root} ({reasons})")
    classes = sorted({name for name in label_names if name is not None})
    meta = {
        "count": len(uris),
        "size": size,
        "uris": uris,
        "labels": [name if name is not None else "" for name in label_names],
        "classes": classes,
        "skipped": skipped,
    }
    (out / "meta.json").write_text(json.dumps(meta))


def _open(folder: Path) -> ImageLibrary:
    meta = json.loads((folder / "meta.json").read_text())
    count, size = meta["count"], meta["size"]
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(count, size, size, 3))
    index = {name: i for i, name in enumerate(meta["classes"])}
    labels = np.array([index.get(name, -1) for name in meta["labels"]], dtype=np.int64)
    skipped = [tuple(item) for item in meta["skipped"]]
    return ImageLibrary(images, meta["uris"], labels, meta["classes"], skipped)
