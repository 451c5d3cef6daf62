"""The service end to end on this machine: a real ``simclr serve`` process on loopback.

Figures:
  * embeddings/s through gRPC (one image per Embed call) with 1, 8 and 32 concurrent clients,
    against in-process ONNX Runtime on the same model and images (decode + batch-32 inference),
    measured before and after the gRPC runs (the machine's speed drifts) and averaged;
    the same with one image per message on an open EmbedStream call per client (and one client
    keeping 32 such requests in flight on its stream); and with 16 images per Embed call (a bulk
    client) at 8 and 32 clients;
  * p50/p99 latency at a fixed request rate of Embed, of Search by vector over the 100,000 items,
    and of Search by image over the 2,000 images indexed through IndexImages (decode, embed, the
    search, and the near-tie ordering by thumbnail);
  * Search queries/s over 100,000 embeddings of real images (8 concurrent clients, query by
    vector: embeddings of edited copies);
  * ``simclr index`` images/s end to end on a folder against model-only images/s;
  * the server's resident memory;
  * for each gRPC throughput run, the share of its time the encoder was busy (the server's
    ``simclr_encoder_busy_seconds_total`` metric, scraped before and after): where it is well under
    1, the encoder waited on the event loop between batches; and the cores the clients (this
    process: Python gRPC, on the same 2 cores) and the server used meanwhile.

    python benchmarks/bench_service.py --bundle models/compact-cifar10
    python benchmarks/bench_service.py --bundle models/compact-cifar10 --quick
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cifar, embed_pixels, emit
from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.preprocess import decode_square, encoder_input
from simclr_search.bundle.runtime import Encoder
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.index.collection import CollectionConfig
from simclr_search.index.metadata import NewItem
from simclr_search.index.store import Store
from simclr_search.serving.client import AsyncClient
from simclr_search.serving.jobs.indexer import bulk_config, index_local
from simclr_search.serving.jobs.quickstart import start_server

ROOT = Path(__file__).resolve().parents[1]
#: Search by image is copy detection (the query's views, verification): several encoder runs per
#: query, so its latency is measured at a rate this machine sustains, not Embed's 100/s.
SEARCH_IMAGE_RATE = 50.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def encoder_busy_seconds(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    match = re.search(rb"^simclr_encoder_busy_seconds_total (\S+)$", text, re.M)
    if match is None:
        raise RuntimeError("the server's metrics have no simclr_encoder_busy_seconds_total")
    return float(match.group(1))


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) used so far by this process, or by process ``pid``."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def profile(metrics_port: int, server_pid: int, run) -> tuple[float, float, float, float]:
    """``run()``'s result; the share of its wall time the server's encoder was busy; and the cores
    the clients (this process) and the server used meanwhile: on a 2-core machine the clients'
    share is CPU the server did not have."""
    busy = encoder_busy_seconds(metrics_port)
    client, server, tick = cpu_seconds(), cpu_seconds(server_pid), time.perf_counter()
    result = run()
    wall = time.perf_counter() - tick
    return (
        result,
        (encoder_busy_seconds(metrics_port) - busy) / wall,
        (cpu_seconds() - client) / wall,
        (cpu_seconds(server_pid) - server) / wall,
    )


def in_process_rate(bundle: Path, images: list[bytes], seconds: float) -> float:
    manifest = load_manifest(bundle)
    encoder = Encoder(manifest, device="cpu", intra_threads=2)
    count, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds:
        for start in range(0, len(images), 32):
            batch = images[start : start + 32]
            encoder(encoder_input(batch, manifest.input_size, manifest.mean, manifest.std))
            count += len(batch)
    return count / (time.perf_counter() - tick)


def model_only_rate(bundle: Path, images: list[bytes], seconds: float, batch: int = 64) -> float:
    """Inference alone: preprocessed batches straight into ONNX Runtime (no decoding), the better
    of one stream with two intra-op threads and two single-threaded streams side by side."""
    manifest = load_manifest(bundle)
    inputs = encoder_input(images[:batch], manifest.input_size, manifest.mean, manifest.std)
    rates = {}
    for threads, streams in ((2, 1), (1, 2)):
        encoder = Encoder(manifest, device="cpu", intra_threads=threads)
        encoder(inputs)
        counts = [0] * streams
        stop = time.perf_counter() + seconds / 2

        def run(slot: int, encoder=encoder, counts=counts, stop=stop) -> None:
            while time.perf_counter() < stop:
                encoder(inputs)
                counts[slot] += len(inputs)

        tick = time.perf_counter()
        workers = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rates[f"{streams} x {threads} threads"] = sum(counts) / (time.perf_counter() - tick)
    print("model alone: " + ", ".join(f"{k} {v:.0f} images/s" for k, v in rates.items()))
    return max(rates.values())


async def closed_loop(address: str, clients: int, seconds: float, call) -> float:
    """Items/s when ``clients`` connections each send ``await call(client, i)`` back to back;
    ``call`` returns how many items the request carried, ``i`` counts that client's requests."""
    count = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal count
        async with AsyncClient(address) as client:
            i = offset
            while time.perf_counter() < stop:
                done = await call(client, i)  # not "count += await": that reads count first
                count += done
                i += clients

    tick = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return count / (time.perf_counter() - tick)


async def grpc_rate(
    address: str, images: list[bytes], clients: int, seconds: float, per_call: int = 1
) -> float:
    async def embed(client: AsyncClient, i: int) -> int:
        await client.embed([images[(i * per_call + j) % len(images)] for j in range(per_call)])
        return per_call

    return await closed_loop(address, clients, seconds, embed)


async def grpc_stream_rate(
    address: str, images: list[bytes], clients: int, seconds: float
) -> float:
    """Images/s with one image per message, each client sending on one open EmbedStream call."""
    count = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal count
        async with AsyncClient(address) as client, client.embed_stream() as stream:
            i = offset
            while time.perf_counter() < stop:
                await stream.embed([images[i % len(images)]])
                count += 1
                i += clients

    tick = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return count / (time.perf_counter() - tick)


async def grpc_stream_ahead_rate(
    address: str, images: list[bytes], seconds: float, ahead: int = 32
) -> float:
    """Images/s from one client on one EmbedStream that keeps ``ahead`` one-image requests in
    flight (one task sends, another receives)."""
    received = 0
    stop = time.perf_counter() + seconds
    room = asyncio.Semaphore(ahead)
    sent: asyncio.Queue[bool] = asyncio.Queue()  # one True per request sent, False at the end
    async with AsyncClient(address) as client, client.embed_stream() as stream:

        async def send() -> None:
            i = 0
            while time.perf_counter() < stop:
                await room.acquire()
                await stream.send([images[i % len(images)]])
                sent.put_nowait(True)
                i += 1
            sent.put_nowait(False)

        async def receive() -> None:
            nonlocal received
            while await sent.get():
                await stream.receive()
                received += 1
                room.release()

        tick = time.perf_counter()
        await asyncio.gather(send(), receive())
        return received / (time.perf_counter() - tick)


async def latency(
    address: str, call: str, payloads: list, rate: float, seconds: float
) -> dict[str, float]:
    async with AsyncClient(address) as client:
        times: list[float] = []
        tasks = []

        async def one(payload) -> None:
            tick = time.perf_counter()
            if call == "embed":
                await client.embed([payload])
            elif call == "search_image":
                await client.search(image=payload, k=10)
            else:
                await client.search(vector=payload, k=10, collection="vectors")
            times.append(time.perf_counter() - tick)

        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(payloads[i % len(payloads)])))
        await asyncio.gather(*tasks)
    ms = np.array(times) * 1000
    return {
        "rate_per_s": rate,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


async def index_images(address: str, images: list[bytes]) -> int:
    """Index ``images`` into the default collection through IndexImages; how many were indexed."""
    async with AsyncClient(address) as client:
        items = ((f"img{i}", data, "", {}) for i, data in enumerate(images))
        results = [r async for r in client.index_images(items)]
    failed = [r for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} images failed to index, e.g. {failed[0].error}")
    return len(results)


async def search_qps(address: str, queries: np.ndarray, clients: int, seconds: float) -> float:
    async def search(client: AsyncClient, i: int) -> int:
        await client.search(vector=queries[i % len(queries)], k=10, collection="vectors")
        return 1

    return await closed_loop(address, clients, seconds, search)


def image_vectors(bundle: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` embeddings of real images for the Search figures, and 1,000 query embeddings.

    Why not random vectors: Gaussian noise has no clusters, so an IVF index must probe nearly all
    its lists to reach the recall target (nprobe 1,024 of 1,264 at 100,000), unlike any image
    library. Here: CIFAR-10's 60,000 images, then mirror images of the training images up to
    ``n``; the queries are 1,000 test images rolled 2 px sideways (edited copies, as in reverse image
    search). Embedded in this process with the bundle's encoder, before the server starts.
    """
    manifest = load_manifest(bundle)
    encoder = Encoder(manifest, device="cpu", intra_threads=2)
    size = manifest.input_size
    payloads = (data for split in ("test", "train") for _, data in iter_image_bytes(cifar(split)))
    pixels = np.stack([decode_square(data, size) for data in itertools.islice(payloads, n)])
    # Test images come first; past 60,000, mirror images of the training images.
    mirrored = pixels[10_000 : 10_000 + n - len(pixels), :, ::-1]
    vectors = embed_pixels(encoder, manifest, np.concatenate([pixels, mirrored]))
    queries = embed_pixels(encoder, manifest, np.roll(pixels[:1000], 2, axis=2))
    return vectors, queries


def fill_vectors(store_root: Path, vectors: np.ndarray) -> dict:
    """The ``vectors`` collection; returns the index it settled on (kind and search parameters)."""
    store = Store(store_root)
    col = store.create("vectors", CollectionConfig(dim=vectors.shape[1]))
    for start in range(0, len(vectors), 5000):
        chunk = vectors[start : start + 5000]
        col.add([NewItem(f"v{start + i}", v) for i, v in enumerate(chunk)])
    col.wait_for_rebuild()  # measure the index the collection settles on, not one mid-re-plan
    index = col.stats()["index"]
    store.close()
    return index


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default=str(ROOT / "models" / "compact-cifar10"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ort-threads", default="2", help="the server's --ort-threads")
    parser.add_argument("--encoder-lanes", default="auto", help="the server's --encoder-lanes")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    seconds = 3.0 if args.quick else 10.0
    work = Path(tempfile.mkdtemp(prefix="simclr-service-bench-"))
    images = [
        data
        for _, data in zip(
            range(2000), (d for _, d in iter_image_bytes(cifar("test"))), strict=False
        )
    ]
    result: dict = {"quick": args.quick, "bundle": str(bundle)}

    # Each reference rate is measured before and after what it is compared with, and the ratio taken
    # against the mean: this machine's speed drifts by several percent within minutes.
    inproc_before = in_process_rate(bundle, images, seconds)
    print(f"in-process ONNX Runtime (decode + batch 32), before: {inproc_before:.0f} images/s")
    n_vectors = 10_000 if args.quick else 100_000
    vectors, queries = image_vectors(bundle, n_vectors)
    result["search_index"] = fill_vectors(work / "store", vectors)
    metrics_port = free_port()
    proc, address = start_server(
        bundle,
        work / "store",
        "--max-concurrent",
        "256",
        "--metrics-port",
        str(metrics_port),
        "--ort-threads",
        args.ort_threads,
        "--encoder-lanes",
        args.encoder_lanes,
    )
    try:
        rates, busy, cores = {}, {}, {}

        def measure(name: str, key: str, coroutine) -> None:
            rates[name], busy[name], client, server = profile(
                metrics_port, proc.pid, lambda: asyncio.run(coroutine)
            )
            cores[name] = (client, server)
            result[key] = rates[name]
            result[key.replace("images_per_s", "encoder_busy")] = busy[name]
            result[key.replace("images_per_s", "cores_client_server")] = [client, server]

        for clients in (1, 8, 32):
            measure(
                f"{clients:2d} concurrent clients",
                f"grpc_images_per_s_{clients}_clients",
                grpc_rate(address, images, clients, seconds),
            )
        # One image per message on an open EmbedStream per client: no per-call set-up.
        for clients in (1, 8, 32):
            measure(
                f"{clients:2d} clients, EmbedStream",
                f"grpc_stream_images_per_s_{clients}_clients",
                grpc_stream_rate(address, images, clients, seconds),
            )
        measure(
            " 1 client, EmbedStream, 32 requests in flight",
            "grpc_stream_images_per_s_1_client_32_ahead",
            grpc_stream_ahead_rate(address, images, seconds),
        )
        # The same with a batch of images per Embed call (how a bulk client calls it): the per-call
        # cost of Python gRPC on both ends is shared by the batch.
        for clients in (8, 32):
            measure(
                f"{clients:2d} clients x 16 images per call",
                f"grpc_images_per_s_{clients}_clients_16_per_call",
                grpc_rate(address, images, clients, seconds, per_call=16),
            )
        inproc_after = in_process_rate(bundle, images, seconds)  # the server idles meanwhile
        inproc = (inproc_before + inproc_after) / 2
        print(
            f"in-process, after: {inproc_after:.0f} images/s; ratios against the mean, {inproc:.0f}"
        )
        for name, rate in rates.items():
            print(
                f"gRPC Embed, {name}: {rate:7.0f} images/s = {rate / inproc:.2f} of in-process; "
                f"encoder busy {busy[name]:.0%} of the time; cores used by the clients "
                f"{cores[name][0]:.2f}, the server {cores[name][1]:.2f}"
            )
        result["in_process_images_per_s"] = inproc
        result["in_process_before_after"] = [inproc_before, inproc_after]
        result["grpc_vs_in_process_32"] = result["grpc_images_per_s_32_clients"] / inproc
        result["grpc_vs_in_process_32_stream"] = (
            result["grpc_stream_images_per_s_32_clients"] / inproc
        )
        result["grpc_vs_in_process_32_batched"] = (
            result["grpc_images_per_s_32_clients_16_per_call"] / inproc
        )
        result["embed_latency"] = asyncio.run(latency(address, "embed", images, 100.0, seconds))
        result["search_latency"] = asyncio.run(
            latency(address, "search", list(queries), 100.0, seconds)
        )
        result["indexed_images"] = asyncio.run(index_images(address, images))
        result["search_image_latency"] = asyncio.run(
            latency(address, "search_image", images, SEARCH_IMAGE_RATE, seconds)
        )
        print(
            f"Embed at 100/s: p50 {result['embed_latency']['p50_ms']:.1f} ms, p99 {result['embed_latency']['p99_ms']:.1f} ms"
        )
        print(
            f"Search by vector over {n_vectors:,} items at 100/s: "
            f"p50 {result['search_latency']['p50_ms']:.1f} ms, "
            f"p99 {result['search_latency']['p99_ms']:.1f} ms"
        )
        print(
            f"Search by image over {result['indexed_images']:,} images at {SEARCH_IMAGE_RATE:g}/s: "
            f"p50 {result['search_image_latency']['p50_ms']:.1f} ms, "
            f"p99 {result['search_image_latency']['p99_ms']:.1f} ms"
        )
        qps = asyncio.run(search_qps(address, queries, 8, seconds))
        result["search_qps_8_clients"] = qps
        result["indexed_vectors"] = n_vectors
        index = result["search_index"]
        print(
            f"Search over {n_vectors:,} image embeddings, 8 clients: {qps:.0f} queries/s "
            f"({index['kind']}, {index['nlist']} lists, search parameters {index['params']})"
        )
        result["server_rss_mb"] = rss_mb(proc.pid)
        print(f"server resident memory: {result['server_rss_mb']:.0f} MB")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    library = cifar("test") if args.quick else cifar("train")
    n_library = sum(1 for _ in iter_image_bytes(library)) if args.quick else 50_000
    model_only_before = model_only_rate(bundle, images, seconds)
    report = asyncio.run(
        index_local(
            library,
            bulk_config(bundle, work / "index-store"),
            batch_size=64,
            progress=False,
        )
    )
    model_only_after = model_only_rate(bundle, images, seconds)
    model_only = (model_only_before + model_only_after) / 2
    result["model_only_before_after"] = [model_only_before, model_only_after]
    result["index_images_per_s"] = report.images_per_s
    result["model_only_images_per_s"] = model_only
    result["index_vs_model_only"] = report.images_per_s / model_only
    print(
        f"simclr index on {library.name} ({n_library} images): {report.images_per_s:.0f} images/s end to end, "
        f"model only {model_only:.0f} images/s (mean of before and after): "
        f"{report.images_per_s / model_only:.2f}"
    )
    shutil.rmtree(work, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
