"""Ray Data indexing against ``simclr index`` in this process, on the same library and machine.

Two libraries, written to a temporary folder as files: ``--images`` CIFAR-10 train JPEGs (small
images: the engine's per-image overhead shows most) and ``--photos`` megapixel JPEGs cut and scaled
from the Kodak24 / CBSD68 photos (decode and local features dominate, as in a photo library). For
each, alternating, ``--repeats`` times, into a fresh store each run:

* local: ``serving.jobs.indexer.index_local`` with the batch-job settings of ``simclr index``;
* ray: ``serving.jobs.ray_index.index_on_ray`` (what ``simclr index --ray`` runs) on a Ray started
  once beforehand on this machine (one node), into ``--shards`` shards.

Both run the shipped bundle with copy detection on (thumbnails and ORB features stored). Printed: the
images/s of each run and the ratio ray / local (best runs; the goal is >= 0.8: the engine's
overhead); a Ray job's fixed start-up (its shard and encoder actors), measured on a 16-image library,
and the rate with it taken off, which a library of millions sees; from that rate, on paper, the
nodes like this one that index 100 million photos in a day.

Ray's rows per batch are what ``simclr index --ray`` picks from the files' sizes (``--batch-size
0``): 256 for the CIFAR thumbnails, 64 for the photos. The photo library is 3,000 photos so that a
job lasts about half a minute here: the job's few seconds of start-up are stated apart, as is the
rate without them.

    python benchmarks/bench_ray.py            # 50,000 CIFAR images + 3,000 photos: ~12 minutes
    python benchmarks/bench_ray.py --quick    # 5,000 + 100: about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cifar, emit
from benchmarks.copy_data import photos
from simclr_search.bundle.sources import list_source_files
from simclr_search.serving.jobs.indexer import bulk_config, index_local
from simclr_search.serving.jobs.ray_index import RaySettings, batch_rows

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "compact-cifar10"
PER_DAY = 100_000_000


def write_cifar(folder: Path, count: int) -> int:
    with tarfile.open(cifar("train")) as tar:
        written = 0
        for member in tar:
            if not member.isfile() or written >= count:
                continue
            target = folder / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            written += 1
    return written


def write_photos(folder: Path, count: int, seed: int = 7) -> tuple[int, float]:
    """``count`` JPEGs of 2-3 megapixels: random crops of the photos, scaled up (a phone's size)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = [Image.open(io.BytesIO(data)).convert("RGB") for data in photos().values()]
    folder.mkdir(parents=True, exist_ok=True)
    pixels = 0
    for i in range(count):
        image = sources[i % len(sources)]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        scale = math.sqrt(rng.uniform(2.0e6, 3.0e6) / (cw * ch))
        big = image.crop((x, y, x + cw, y + ch)).resize((int(cw * scale), int(ch * scale)))
        big.save(folder / f"photo-{i:05d}.jpg", quality=int(rng.integers(80, 95)))
        pixels += big.size[0] * big.size[1]
    return count, pixels / count / 1e6


def run_local(library: Path, store: Path) -> tuple[float, float]:
    """``(images/s, seconds)`` of ``simclr index`` in this process; the models' load not counted."""
    shutil.rmtree(store, ignore_errors=True)
    report = asyncio.run(index_local(library, bulk_config(BUNDLE, store), progress=False))
    assert report.failed == 0, report.summary()
    return report.images_per_s, report.seconds


def run_ray(library: Path, store: Path, shards: int, batch_size: int) -> tuple[float, float]:
    """``(images/s, seconds)`` of ``simclr index --ray`` on the running Ray: the job's whole time,
    its shard and encoder actors' start included."""
    from simclr_search.index.ray_shards import ShardedStore
    from simclr_search.serving.jobs.ray_index import RaySettings, index_on_ray

    shutil.rmtree(store, ignore_errors=True)
    report = index_on_ray(
        library,
        BUNDLE,
        store,
        "images",
        RaySettings(address="auto", shards=shards, batch_size=batch_size),
        progress=False,
    )
    assert report.failed == 0, report.summary()
    ShardedStore(store, address="auto").drop("images")  # its shard actors too, before the next run
    return report.images_per_s, report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000, help="CIFAR-10 train images")
    parser.add_argument("--photos", type=int, default=3000, help="megapixel photos")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=RaySettings.batch_size,
        help="images per Ray batch (0: from the files' sizes, as simclr index --ray)",
    )
    parser.add_argument("--quick", action="store_true", help="5,000 images, 100 photos, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.photos, args.repeats = 5_000, 100, 1

    import os

    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    results: dict = {
        "cores": os.cpu_count(),
        "shards": args.shards,
        "batch_size": args.batch_size,
        "libraries": {},
    }
    try:
        libraries = {}
        if args.images:
            libraries["cifar"] = (work / "cifar", write_cifar(work / "cifar", args.images), 0.001)
        if args.photos:
            count, megapixels = write_photos(work / "photos", args.photos)
            libraries["photos"] = (work / "photos", count, megapixels)
        started = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, namespace="simclr")
        results["ray_start_s"] = round(time.perf_counter() - started, 2)
        tiny = work / "tiny"
        write_cifar(tiny, 16)
        ray_fixed = min(
            run_ray(tiny, work / "store-ray", args.shards, args.batch_size)[1] for _ in range(2)
        )
        results["ray_job_fixed_s"] = round(ray_fixed, 2)
        print(f"ray job start-up (16 images): {ray_fixed:.1f} s", flush=True)
        for name, (folder, count, megapixels) in libraries.items():
            local, on_ray = [], []
            for repeat in range(args.repeats):
                local.append(run_local(folder, work / "store-local"))
                on_ray.append(run_ray(folder, work / "store-ray", args.shards, args.batch_size))
                print(
                    f"{name} run {repeat + 1}: local {local[-1][0]:.0f} images/s,"
                    f" ray {on_ray[-1][0]:.0f} images/s",
                    flush=True,
                )
            best_local, best_ray = max(v for v, _ in local), max(v for v, _ in on_ray)
            running = count / (min(t for _, t in on_ray) - ray_fixed)  # start-up taken off
            per_day = running * 86_400
            nodes = math.ceil(PER_DAY / per_day)
            rows = args.batch_size or batch_rows([str(p) for p in list_source_files(folder)])
            results["libraries"][name] = {
                "images": count,
                "rows_per_batch": rows,
                "megapixels": round(megapixels, 3),
                "local_images_per_s": [round(v, 1) for v, _ in local],
                "ray_images_per_s": [round(v, 1) for v, _ in on_ray],
                "ratio": round(best_ray / best_local, 3),
                "ray_running_images_per_s": round(running, 1),
                "ratio_running": round(running / best_local, 3),
                "nodes_for_100M_per_day": nodes,
            }
            print(
                f"{name}: {count} images of {megapixels:.2f} MP, {rows} a batch on Ray:"
                f" local {best_local:.0f} /s,"
                f" ray {best_ray:.0f} /s (ratio {best_ray / best_local:.2f}); without the job's"
                f" start-up {running:.0f} /s (ratio {running / best_local:.2f}): {PER_DAY:,} a day"
                f" needs {nodes} node{'s' if nodes != 1 else ''} like this one ({os.cpu_count()} cores,"
                f" {per_day / 1e6:.1f} M a day each)",
                flush=True,
            )
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    emit(results)


if __name__ == "__main__":
    main()
