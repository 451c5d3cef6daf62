"""``simclr index FOLDER --ray [ADDRESS]``: batch indexing on Ray Data into a sharded collection.

The same reader -> mapper -> writer as :mod:`serving.jobs.indexer`, spread over a cluster:

* read + prepare (Ray tasks, fused by Ray Data into one stage): the library's files (local folders
  and archives listed here, read on the workers; object-store URIs, archives among them, through
  Ray's own reader, which reads each file whole: keep archives there to WebDataset-sized shards), the
  content hash, the resume check against the shards (a hash already stored is skipped), the decode to
  model pixels and the stored signature (thumbnail and local features), with a failure per bad image;
* embed + write (Ray actors, each with one ONNX Runtime session; one GPU each where the cluster has
  GPUs): the encoder on a batch, then an upsert to the shard actors (``index.ray_shards``) that own
  the ids. Rows come back to this process only as small outcomes, for the progress bar and report.

The collection's shards are the ones the server serves with ``simclr serve --ray``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from tqdm import tqdm

from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.preprocess import normalize, pool_tiles
from simclr_search.bundle.runtime import Encoder
from simclr_search.bundle.sources import (
    ARCHIVE_SUFFIXES,
    IMAGE_EXTENSIONS,
    iter_archive_bytes,
    iter_image_bytes,
    list_source_files,
)
from simclr_search.index.checks import check_ids, check_uri
from simclr_search.index.collection import CollectionConfig
from simclr_search.index.errors import InvalidArgument
from simclr_search.index.metadata import NewItem
from simclr_search.index.ray_shards import ShardedStore
from simclr_search.index.sharded import ShardedCollection
from simclr_search.serving.core.images import ImageLimits
from simclr_search.serving.core.request_images import decode_photo_chunk
from simclr_search.serving.core.signature import vote_codes
from simclr_search.serving.core.tie_break import SIGNATURE_BYTES
from simclr_search.serving.jobs.indexer import IndexReport, _count, library_id

log = logging.getLogger("simclr.index")

#: Sources (files or archives) per read task.
SOURCES_PER_TASK = 256
#: Logical CPUs a read/decode task and a CPU encoder actor ask for. Half a core each: on a small node
#: a whole core per encoder actor leaves no slot for the decode tasks that feed it, and Ray Data then
#: waits on its own reservations; the work itself is one thread each either way.
TASK_CPUS = 0.5


#: Rows per Ray batch when the library's file sizes are unknown (archives, object stores), and the
#: fewest otherwise.
BATCH_ROWS = 64
#: The most rows per Ray batch: each batch costs a resume check and a durable upsert on every shard
#: (a remote call and an SQLite commit each), so batches of small images are made longer.
MAX_BATCH_ROWS = 256
#: About this many bytes of encoded images per batch when the rows are sized from the files.
BATCH_BYTES = 16 << 20


@dataclass(frozen=True)
class RaySettings:
    """How the job uses the cluster."""

    address: str = "local"
    shards: int = 4
    embedders: int = 0  # encoder actors; 0: one per GPU, else one per CPU
    batch_size: int = 0  # rows per batch; 0: from the files' sizes (batch_rows)


def batch_rows(paths: list[str], sample: int = 1000) -> int:
    """Rows per Ray batch for a library of local ``paths``: about :data:`BATCH_BYTES` of files,
    between :data:`BATCH_ROWS` and :data:`MAX_BATCH_ROWS`; archives count as unknown.

    Why: on a node as small as 2 cores the shards' per-call costs (a remote call, a commit) were the
    largest share of Ray's overhead for thumbnails, and longer batches cut them; megapixel photos
    keep short batches, where those costs are small beside the decode and long batches would leave
    the last actors idle at the end of a job and hold more encoded bytes in memory.
    """
    step = max(1, len(paths) // sample)
    sizes = []
    for path in paths[::step]:
        if path.lower().endswith(ARCHIVE_SUFFIXES):
            continue
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            continue  # the reader reports it
    if not sizes:
        return BATCH_ROWS
    mean = max(1.0, sum(sizes) / len(sizes))
    return int(min(MAX_BATCH_ROWS, max(BATCH_ROWS, BATCH_BYTES // mean)))


def _read_sources(batch: dict[str, np.ndarray], root: str) -> dict[str, Any]:
    """Files and archives -> one row per image: ``id``, ``uri``, ``data``, ``error``."""
    rows: dict[str, list] = {"id": [], "uri": [], "data": [], "error": []}
    for path in batch["path"]:
        skipped: list[tuple[str, str]] = []
        for record, data in iter_image_bytes(str(path), skipped):
            rows["id"].append(library_id(root, record.uri))
            rows["uri"].append(record.uri)
            rows["data"].append(data)
            rows["error"].append("")
        for uri, reason in skipped:
            rows["id"].append("")
            rows["uri"].append(uri)
            rows["data"].append(b"")
            rows["error"].append(f"unreadable: {reason}")
    return {key: np.array(values, dtype=object) for key, values in rows.items()}


def _from_binary(batch: dict[str, np.ndarray], root: str) -> dict[str, Any]:
    """Ray's ``read_binary_files`` rows (``bytes``, ``path``) -> our reader's rows, an archive's
    members one row each (``archive::member``, as for local archives). Ray gives paths without
    the scheme (``bucket/key`` for ``s3://bucket/key``); the uri keeps it, the id is the path below
    ``root``."""
    scheme, _, below = root.partition("://")
    rows: dict[str, list] = {"id": [], "uri": [], "data": [], "error": []}

    def add(path: str, data: bytes, error: str = "") -> None:
        rows["id"].append(library_id(below.rstrip("/"), path) if not error else "")
        rows["uri"].append(f"{scheme}://{path}")
        rows["data"].append(data)
        rows["error"].append(error)

    for path, data in zip((str(p) for p in batch["path"]), batch["bytes"], strict=True):
        if not path.lower().endswith(ARCHIVE_SUFFIXES):
            add(path, data)
            continue
        skipped: list[tuple[str, str]] = []
        for record, member in iter_archive_bytes(path, data, skipped):
            add(record.uri, member)
        for uri, reason in skipped:
            add(uri, b"", f"unreadable: {reason}")
    return {key: np.array(values, dtype=object) for key, values in rows.items()}


def _prepare(
    batch: dict[str, np.ndarray],
    collection: ShardedCollection,
    size: int,
    limits: ImageLimits,
    with_features: bool,
) -> dict[str, Any]:
    """Hash, resume check, id checks and decode: each row becomes ``todo`` (with pixels and
    signature), ``duplicate``, ``failed`` or ``unreadable``."""
    n = len(batch["id"])
    status = ["todo"] * n
    errors = [str(e) for e in batch["error"]]
    ids = [str(i) for i in batch["id"]]
    datas = list(batch["data"])
    hashes = [hashlib.sha256(d).hexdigest() if d else "" for d in datas]
    least = SIGNATURE_BYTES + 1 if with_features else 1
    known = collection.known_hashes([h for h in hashes if h], True, least)
    for i in range(n):
        if errors[i]:
            status[i] = "unreadable"
            continue
        ids[i] = ids[i] or hashes[i]
        try:
            check_ids([ids[i]])
            check_uri(str(batch["uri"][i]), ids[i])
        except InvalidArgument as exc:
            status[i], errors[i] = "failed", str(exc)
            continue
        if hashes[i] in known:
            status[i] = "duplicate"
        else:
            known.add(hashes[i])  # a second copy in this batch is a duplicate too
    todo = [i for i in range(n) if status[i] == "todo"]
    pixels = [b""] * n  # each row's (T, S, S, 3) tiles as bytes: T differs between rows
    signatures = [b""] * n
    for i, photo in zip(
        todo, decode_photo_chunk([datas[i] for i in todo], size, limits, with_features), strict=True
    ):
        if isinstance(photo, Exception):
            status[i], errors[i] = "failed", str(photo)
            continue
        pixels[i] = photo.tiles.tobytes()
        signatures[i] = photo.signature
    return {
        "id": np.array(ids, dtype=object),
        "uri": batch["uri"],
        "hash": np.array(hashes, dtype=object),
        "status": np.array(status, dtype=object),
        "error": np.array(errors, dtype=object),
        "pixels": np.array(pixels, dtype=object),
        "signature": np.array(signatures, dtype=object),
    }


class EmbedWriter:
    """One ONNX Runtime session per actor: embeds a batch's ``todo`` rows and upserts them into the
    shards that own their ids (durable when the call returns); answers small outcome rows."""

    def __init__(self, bundle: str, int8: bool, device: str, collection: ShardedCollection) -> None:
        self.manifest = load_manifest(Path(bundle))
        self.encoder = Encoder(self.manifest, int8, device, 1 if device == "cpu" else 0)
        self.collection = collection

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        status = batch["status"].copy()
        todo = np.flatnonzero(status == "todo")
        if len(todo):
            size = self.manifest.input_size
            tiles = [np.frombuffer(batch["pixels"][i], np.uint8) for i in todo]
            squares = np.concatenate(tiles).reshape(-1, size, size, 3)
            counts = [len(t) // (size * size * 3) for t in tiles]
            vectors = pool_tiles(
                self.encoder(normalize(squares, self.manifest.mean, self.manifest.std)),
                counts,
                self.manifest.normalized,
            )
            items = [
                NewItem(
                    str(batch["id"][i]),
                    vector,
                    str(batch["uri"][i]),
                    str(batch["hash"][i]),
                    {},
                    bytes(batch["signature"][i]),
                    vote_codes(bytes(batch["signature"][i])),
                )
                for i, vector in zip(todo, vectors, strict=True)
            ]
            self.collection.upsert(items)
            status[todo] = "indexed"
        return {key: batch[key] for key in ("id", "uri", "hash", "error")} | {"status": status}


def _sources(folder: str, parallel: int, rows: int) -> tuple[ray.data.Dataset, int]:
    """The library as a dataset of image rows (``id``, ``uri``, ``data``, ``error``), in at least
    ``parallel`` blocks where there are that many sources (a block is one task's work), and the rows
    per batch (``rows``, or from the files' sizes where ``rows`` is 0)."""
    if "://" in folder:  # an object store or other filesystem Ray reads (s3://, gs://, ...)
        extensions = sorted(e.lstrip(".") for e in (*IMAGE_EXTENSIONS, *ARCHIVE_SUFFIXES))
        files = ray.data.read_binary_files(
            folder,
            include_paths=True,
            file_extensions=extensions,
            num_cpus=TASK_CPUS,  # as the stages after it, so that Ray fuses read, convert and decode
        )
        rows = rows or BATCH_ROWS
        return files.map_batches(_from_binary, fn_kwargs={"root": folder}, num_cpus=TASK_CPUS), rows
    paths = [str(p) for p in list_source_files(folder)]
    rows = rows or batch_rows(paths)
    blocks = max(1, min(len(paths), max(parallel, -(-len(paths) // SOURCES_PER_TASK))))
    listed = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
    return listed.map_batches(
        _read_sources,
        fn_kwargs={"root": str(Path(folder))},
        batch_size=SOURCES_PER_TASK,
        num_cpus=TASK_CPUS,
    ), rows


def index_on_ray(
    folder: str | Path,
    bundle: Path,
    store: Path,
    collection: str = "images",
    settings: RaySettings = RaySettings(),
    int8: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> IndexReport:
    """Index ``folder`` into the sharded ``collection`` of ``store`` on the Ray cluster."""
    manifest = load_manifest(bundle)
    sharded = ShardedStore(store, settings.shards, settings.address)
    report = IndexReport()
    started = time.perf_counter()
    try:
        target = sharded.create(
            collection or "images",
            CollectionConfig(dim=manifest.embedding_dim, space=manifest.embedding_space),
            exist_ok=True,
        )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours below counts images, not blocks
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        embedders = settings.embedders or (gpus or max(1, cpus))
        sources, rows = _sources(str(folder), 4 * embedders, settings.batch_size)
        log.info(
            "indexing on Ray: %d encoder actor(s), %s; %d rows a batch; %d shards",
            embedders,
            "one GPU each" if gpus else "on CPUs",
            rows,
            target.shards.count,
        )
        prepared = sources.map_batches(
            _prepare,
            fn_kwargs={
                "collection": target,
                "size": manifest.input_size,
                "limits": ImageLimits(),
                "with_features": True,  # as the server indexes by default (copy detection)
            },
            batch_size=rows,
            num_cpus=TASK_CPUS,
        )
        outcomes = prepared.map_batches(
            EmbedWriter,
            fn_constructor_kwargs={
                "bundle": str(bundle.resolve()),
                "int8": int8,
                "device": device if gpus else "cpu",
                "collection": target,
            },
            batch_size=rows,
            compute=ray.data.ActorPoolStrategy(size=embedders),
            num_cpus=0 if gpus else TASK_CPUS,
            num_gpus=1 if gpus else 0,
        )
        with tqdm(desc="indexing (ray)", unit="img", disable=not progress, mininterval=1.0) as bar:
            for batch in outcomes.iter_batches(batch_size=None, batch_format="numpy"):
                for status, uri, error in zip(
                    batch["status"], batch["uri"], batch["error"], strict=True
                ):
                    if status == "unreadable":
                        report.unreadable += 1
                        report.failures.append((str(uri), str(error)))
                    else:
                        _count(report, str(status), str(uri), str(error))
                bar.update(len(batch["status"]))
    finally:
        sharded.close()
    report.seconds = time.perf_counter() - started
    return report
