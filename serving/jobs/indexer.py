"""Batch indexing of an image library (``simclr index FOLDER``): reader -> mapper -> writer.

* reader: every image file under the folder (and inside ``.tar``/``.tar.gz`` archives), as bytes;
* mapper: parallel decode + batched inference, either in this process (the service core, no server
  needed) or through a running server's ``IndexImages`` stream;
* writer: durable upserts into the collection.
Resumable: an image whose content hash is already in the collection is skipped, so re-running after
an interruption only does the rest. Bad files are counted and reported, never fatal.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.serving.core.service import SearchService, ServiceConfig
from simclr_search.serving.core.writes import IndexOutcome


@dataclass
class IndexReport:
    indexed: int = 0
    duplicates: int = 0
    failed: int = 0
    unreadable: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        total = self.indexed + self.duplicates + self.failed
        return total / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lines = [
            f"indexed {self.indexed}, skipped {self.duplicates} already indexed, failed {self.failed}, "
            f"unreadable {self.unreadable} in {self.seconds:.1f} s ({self.images_per_s:.0f} images/s)"
        ]
        reasons = Counter(reason.split(":")[0] for _, reason in self.failures)
        for reason, count in reasons.most_common(5):
            lines.append(f"  {count} x {reason}")
        for uri, reason in self.failures[:5]:
            lines.append(f"  e.g. {uri}: {reason}")
        return "\n".join(lines)


def read_library(folder: str | Path, skipped: list) -> Iterator[tuple[str, bytes, str, str]]:
    """``(id, bytes, uri, metadata_json)`` per image; the id is the path relative to ``folder``
    (or the member name inside an archive)."""
    root = str(Path(folder))
    for record, data in iter_image_bytes(root, skipped):
        yield library_id(root, record.uri), data, record.uri, "{}"


def library_id(root: str, uri: str) -> str:
    """An image's id in its library: ``uri`` relative to the library's ``root`` (a folder or an
    archive), or the whole ``uri`` where it lies elsewhere."""
    for prefix in (root + "/", root + "::"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_END = object()


class _ReadAhead:
    """The reader in its own thread, at most ``depth`` batches ahead of the consumer.

    Walking folders, reading files and parsing archives (``tarfile`` is pure Python: ~90 us a member)
    would otherwise run on the event loop and stall the batches in flight; in a thread the file
    reads overlap with inference, and the semaphore keeps memory flat. :meth:`get` returns the
    next batch, ``_END`` at the end, or raises what stopped the reader.
    """

    def __init__(self, batches: Iterator[list], depth: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self._stopped = False
        threading.Thread(
            target=self._produce, args=(batches,), name="index-reader", daemon=True
        ).start()

    def _produce(self, batches: Iterator[list]) -> None:
        put = self._queue.put_nowait
        try:
            for batch in batches:
                self._room.acquire()
                if self._stopped:
                    return
                self._loop.call_soon_threadsafe(put, batch)
            self._loop.call_soon_threadsafe(put, _END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            if not self._stopped:
                self._loop.call_soon_threadsafe(put, exc)

    async def get(self):
        item = await self._queue.get()
        self._room.release()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Let a reader blocked on a full queue see that nobody will take more."""
        self._stopped = True
        self._room.release()


def bulk_config(
    bundle: Path, store: Path, int8: bool = False, batch_size: int = 64, cores: int = 0
) -> ServiceConfig:
    """Service settings for a batch job, where throughput is all that counts.

    One single-threaded encoder stream per core instead of one stream with a thread per core: two
    independent runs leave no core waiting at an intra-op barrier while the other one decodes, and
    the model alone is as fast either way (``benchmarks/bench_service.py`` measures both).
    """
    cores = cores or os.cpu_count() or 1
    return ServiceConfig(
        bundle=bundle,
        store=store,
        int8=int8,
        max_batch=batch_size,
        ort_threads=1,
        encoder_streams=cores,
    )


async def index_local(
    folder: str | Path,
    config: ServiceConfig,
    collection: str = "",
    batch_size: int = 64,
    in_flight: int = 6,
    progress: bool = True,
    on_outcome: Callable[[tuple[str, bytes, str, str], IndexOutcome], None] | None = None,
) -> IndexReport:
    """Index with the service core in this process (no server); ``on_outcome(item, outcome)``
    sees every readable image with its result (``simclr dedup`` records the content hashes)."""
    service = SearchService(config)
    await service.start()
    report = IndexReport()
    skipped: list = []
    bar = tqdm(desc="indexing", unit="img", disable=not progress, mininterval=1.0)
    slots = asyncio.Semaphore(in_flight)
    tasks: list[asyncio.Task] = []
    started = time.perf_counter()
    reader: _ReadAhead | None = None

    async def run(batch):
        try:
            for outcome, item in zip(
                await service.index_images(collection, batch), batch, strict=True
            ):
                _count(report, outcome.status, item[2], outcome.error)
                if on_outcome is not None:
                    on_outcome(item, outcome)
            bar.update(len(batch))
        finally:
            slots.release()

    try:
        reader = _ReadAhead(_batches(read_library(folder, skipped), batch_size), in_flight)
        while (batch := await reader.get()) is not _END:
            await slots.acquire()
            tasks.append(asyncio.create_task(run(batch)))
            tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
    finally:
        if reader is not None:
            reader.close()
        bar.close()
        await service.stop()
    report.seconds = time.perf_counter() - started
    report.unreadable = len(skipped)
    report.failures.extend(skipped)
    return report


def index_remote(
    folder: str | Path,
    address: str,
    token: str | None = None,
    collection: str = "",
    progress: bool = True,
) -> IndexReport:
    """Index through a running server's ``IndexImages`` stream."""
    from simclr_search.protos.simclr.v1 import search_pb2 as pb
    from simclr_search.serving.client import Client

    names = {
        pb.IndexImagesResult.INDEXED: "indexed",
        pb.IndexImagesResult.SKIPPED_DUPLICATE: "duplicate",
        pb.IndexImagesResult.FAILED: "failed",
    }
    report = IndexReport()
    skipped: list = []
    uris: dict[str, str] = {}

    def items():
        for item_id, data, uri, _ in read_library(folder, skipped):
            uris[item_id] = uri
            yield item_id, data, uri, {}

    started = time.perf_counter()
    with (
        Client(address, token=token) as client,
        tqdm(desc="indexing", unit="img", disable=not progress) as bar,
    ):
        for result in client.index_images(items(), collection):
            _count(
                report,
                names.get(result.status, "failed"),
                uris.get(result.id, result.id),
                result.error,
            )
            bar.update(1)
    report.seconds = time.perf_counter() - started
    report.unreadable = len(skipped)
    report.failures.extend(skipped)
    return report


def _count(report: IndexReport, status: str, uri: str, error: str) -> None:
    if status == "indexed":
        report.indexed += 1
    elif status == "duplicate":
        report.duplicates += 1
    else:
        report.failed += 1
        report.failures.append((uri, error))
