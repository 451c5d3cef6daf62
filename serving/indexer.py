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
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bundle.sources import iter_image_bytes
from serving.core import SearchService, ServiceConfig


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
        uri = record.uri
        item_id = uri
        for prefix in (root + "/", root + "::"):
            if uri.startswith(prefix):
                item_id = uri[len(prefix) :]
                break
        yield item_id, data, uri, "{}"


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def index_local(
    folder: str | Path,
    config: ServiceConfig,
    collection: str = "",
    batch_size: int = 64,
    in_flight: int = 3,
    progress: bool = True,
) -> IndexReport:
    """Index with the service core in this process (no server)."""
    service = SearchService(config)
    await service.start()
    report = IndexReport()
    skipped: list = []
    bar = tqdm(desc="indexing", unit="img", disable=not progress, mininterval=1.0)
    slots = asyncio.Semaphore(in_flight)
    tasks: list[asyncio.Task] = []
    started = time.perf_counter()

    async def run(batch):
        try:
            for outcome, item in zip(
                await service.index_images(collection, batch), batch, strict=True
            ):
                _count(report, outcome.status, item[2], outcome.error)
            bar.update(len(batch))
        finally:
            slots.release()

    try:
        for batch in _batches(read_library(folder, skipped), batch_size):
            await slots.acquire()
            tasks.append(asyncio.create_task(run(batch)))
            tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
    finally:
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
    from protos.simclr.v1 import search_pb2 as pb
    from serving.client import Client

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
