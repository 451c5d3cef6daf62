"""Copy detection on real photos through the server: edited copies find their originals, and
photos that are not in the index are called not-a-copy.

A real gRPC server (the bundle, a fresh store) indexes the evaluation originals among distractors
(crops of other photos and CIFAR-10 test images) with IndexImages; every original and every
negative photo (not indexed: a third of the queries) is edited once per family of
``simclr_search.edits`` (strengths there) and searched for with Search by image. Reported, side by
side with pHash (``imagehash``) and PDQ (``pdqhash``), nearest by Hamming distance over the same
images: top-1 per edit family, micro-AP over each query's best answer (DISC21's definition: answers
of all queries ranked by score; a negative query's answer is always wrong) and recall at 90%
precision. For ours the score is the calibrated copy probability (the cosine without a
calibration), and ``is_copy``'s precision and recall are given too. The photo splits are in
``benchmarks/copy_data.py``; ``--calibrate`` first fits the bundle's calibration on the calibration
split (never an evaluation photo) and writes it into the bundle.

Speed: Search by image for a 12-megapixel JPEG (p50 / p95, one client), IndexImages of
12-megapixel JPEGs (photos/s, one stream), and the store's bytes per photo.

    python benchmarks/bench_copy_detection.py --calibrate      # fit, then measure
    python benchmarks/bench_copy_detection.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit
from benchmarks.copy_data import (
    SEED,
    calibration_set,
    cifar_images,
    crops,
    photos,
    roles,
    search_calibration,
)
from simclr_search.edits import FAMILIES, edited
from simclr_search.serving.core.copy_search import REACH, VERIFIED
from simclr_search.serving.core.local_features import VOTED

ROOT = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "compact-cifar10")
    p.add_argument("--calibrate", action="store_true", help="fit the bundle's calibration first")
    p.add_argument("--quick", action="store_true", help="fewer photos, distractors and big JPEGs")
    p.add_argument(
        "--ablation",
        action="store_true",
        help="instead: what each part buys (views, verification), each variant calibrated on the "
        "calibration split and measured on the quick set through the service core",
    )
    return p


def evaluate(answers: list[tuple[str | None, str, str, float]]) -> dict:
    """``(truth or None, family, answer id, score)`` per query -> top-1 per family, micro-AP and
    recall at 90% precision over the queries' best answers."""
    positives = sum(1 for truth, *_ in answers if truth is not None)
    by_family: dict[str, list[bool]] = {}
    ranked = []
    for truth, family, answer, score in answers:
        correct = truth is not None and answer == truth
        if truth is not None:
            by_family.setdefault(family, []).append(correct)
        ranked.append((score, correct))
    ranked.sort(key=lambda r: -r[0])
    correct = np.array([c for _, c in ranked], dtype=float)
    hits = np.cumsum(correct)
    precision = hits / np.arange(1, len(correct) + 1)
    recall = hits / positives
    reached = precision >= 0.9
    top1 = {f: round(float(np.mean(v)), 4) for f, v in sorted(by_family.items())}
    return {
        "micro_ap": round(float(np.sum(precision * correct) / positives), 4),
        "recall_at_p90": round(float(recall[reached].max()) if reached.any() else 0.0, 4),
        "mean_top1": round(float(np.mean(list(top1.values()))), 4),
        "min_top1": round(float(min(top1.values())), 4),
        "top1": top1,
    }


def _rgb(data: bytes) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


def hash_answers(index: dict[str, bytes], queries, kind: str) -> list:
    """Nearest stored image by Hamming distance of pHash (64 bits) or PDQ (256 bits)."""
    if kind == "phash":
        import imagehash

        def bits(data: bytes) -> np.ndarray:
            return imagehash.phash(_rgb(data)).hash.ravel()
    else:
        import pdqhash

        def bits(data: bytes) -> np.ndarray:
            return pdqhash.compute(np.asarray(_rgb(data)))[0].astype(bool)

    names = list(index)
    bank = np.stack([bits(index[n]) for n in names])
    out = []
    for truth, family, data in queries:
        distance = (bank != bits(data)[None]).sum(1)
        best = int(np.argmin(distance))
        out.append((truth, family, names[best], -float(distance[best])))
    return out


class Server:
    """The real server in a background event loop, as a user runs it."""

    def __init__(self, bundle: Path, store: Path, copy_detection: bool = True) -> None:
        from simclr_search.serving.core.config import ServiceConfig
        from simclr_search.serving.server.app import start_server
        from simclr_search.serving.server.settings import ServerOptions

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = store
        config = ServiceConfig(bundle=bundle, store=store, copy_detection=copy_detection)
        options = ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0)
        self.running = self._run(start_server(config, options))
        self.address = f"127.0.0.1:{self.running.port}"

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(600)

    def stop(self) -> None:
        self._run(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def big_jpegs(images: list[bytes], count: int) -> list[bytes]:
    """12-megapixel (4000 x 3000) JPEGs, quality 90: photos enlarged, each a different crop."""
    rng = np.random.default_rng(SEED + 5)
    out = []
    for i in range(count):
        image = _rgb(images[i % len(images)])
        w, h = image.size
        dx, dy = int(rng.integers(0, w // 10)), int(rng.integers(0, h // 10))
        image = image.crop((dx, dy, w - int(rng.integers(0, w // 10)), h - dy))
        buffer = io.BytesIO()
        image.resize((4000, 3000), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main(args: argparse.Namespace) -> dict:
    from simclr_search.serving.client import Client
    from simclr_search.serving.core.copy_scores import CopyCalibration

    images = photos()
    r = roles(list(images))
    if args.calibrate:
        from simclr_search.serving.jobs.calibrate import calibrate_bundle

        model = calibrate_bundle(
            args.bundle,
            search_calibration(images),
            pair_data=calibration_set(images, 300),  # as bench_dedup.py --calibrate
            described_as="benchmarks/copy_data.py calibration split (CBSD68) + CIFAR-10 train",
            progress=False,
        )
        print(f"calibrated: threshold {model.threshold:.3f}, weights {model.weights}", flush=True)
    calibration = CopyCalibration.load(args.bundle)
    originals = r["originals"][:: 3 if args.quick else 1]
    negatives = r["negatives"][:: 3 if args.quick else 1]
    index = {n: images[n] for n in originals}
    index.update(crops(images, r["distractor_sources"], 10 if args.quick else 40, SEED + 3))
    index.update(cifar_images("test", 200 if args.quick else 1000, SEED + 4))
    rng = np.random.default_rng(SEED + 6)
    queries = [
        (name if name in index else None, family, edited(images[name], family, rng))
        for name in originals + negatives
        for family in FAMILIES
    ]
    print(f"{len(index)} indexed, {len(queries)} queries", flush=True)
    result: dict = {
        "indexed": len(index),
        "queries": len(queries),
        "negative_queries": sum(1 for q in queries if q[0] is None),
        "calibrated": calibration is not None,
        "calibration": None if calibration is None else calibration.fitted_on,
    }
    with tempfile.TemporaryDirectory(prefix="simclr-copy-bench-") as tmp:
        server = Server(args.bundle, Path(tmp) / "store")
        try:
            with Client(server.address) as client:
                statuses = list(client.index_images([(n, d, n, {}) for n, d in index.items()]))
                assert all(s.status != 3 for s in statuses), "an image failed to index"
                ours, decided, latencies = [], [], []
                for truth, family, data in queries:
                    tick = time.perf_counter()
                    hits = client.search(image=data, k=5)
                    latencies.append(time.perf_counter() - tick)
                    top = hits[0]
                    score = top.copy_probability if calibration is not None else top.score
                    ours.append((truth, family, top.id, score))
                    decided.append((top.is_copy, truth is not None and top.id == truth))
                result["ours"] = evaluate(ours)
                said = [c for copy, c in decided if copy]
                result["is_copy_precision"] = round(float(np.mean(said)), 4) if said else None
                result["is_copy_recall"] = round(
                    sum(said) / sum(1 for q in queries if q[0] is not None), 4
                )
                result["search_ms_photo_p50"] = round(1000 * float(np.median(latencies)), 1)
                result.update(speed(client, server, images, originals, negatives, args.quick))
        finally:
            server.stop()
        for key, copies in (("cifar", True), ("cifar_plain_search", False)):
            server = Server(args.bundle, Path(tmp) / f"{key}-store", copy_detection=copies)
            try:
                with Client(server.address) as client:
                    result[key] = cifar_edits(client, 2000 if args.quick else 10_000, args.quick)
            finally:
                server.stop()
    for kind in ("phash", "pdq"):
        result[kind] = evaluate(hash_answers(index, queries, kind))
    return result


def cifar_edits(client, count: int, quick: bool) -> dict:
    """The project's CIFAR-10 search benchmark's 7 edits (``bench_search_quality.py``), through
    this server's search by image: top-1 per edit over ``count`` indexed. Run with copy detection
    on (the default) and off (``--no-copy-detection``, the plain nearest neighbours the server
    served before), on the same queries."""
    from benchmarks.bench_search_quality import EDITS, edit

    library = cifar_images("test", count, SEED + 7)
    list(client.index_images([(n, d, n, {}) for n, d in library.items()]))
    rng = np.random.default_rng(SEED + 8)
    names = list(library)
    picks = [names[i] for i in rng.choice(len(names), 100 if quick else 500, replace=False)]
    top1 = {}
    for name in EDITS:
        found = [client.search(image=edit(library[n], name, rng), k=1)[0].id == n for n in picks]
        top1[name] = round(float(np.mean(found)), 4)
    return {
        "indexed": count,
        "queries_per_edit": len(picks),
        "top1": top1,
        "mean_top1": round(float(np.mean(list(top1.values()))), 4),
    }


def _store_bytes(server: Server) -> int:
    """The collection's files on disk after a snapshot (SQLite, its WAL, the FAISS file), with
    the WAL checkpointed and truncated first: a WAL keeps its largest size and reuses it, so
    without this a batch of writes may not grow the files at all."""
    import sqlite3

    server.running.service.store.get("images").snapshot()
    with sqlite3.connect(server.store / "images" / "meta.sqlite") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(f.stat().st_size for f in (server.store / "images").rglob("*") if f.is_file())


def speed(client, server, images, originals, negatives, quick: bool) -> dict:
    """12 MP search latency (indexed photos, crops of them, and photos that are not indexed,
    which verification checks furthest), 12 MP indexing rate, and the store's bytes per photo."""
    photos_12mp = big_jpegs([images[n] for n in originals], 12 if quick else 48)
    unknown = big_jpegs([images[n] for n in negatives], 8)
    before = _store_bytes(server)
    votes_before = server.running.service.store.get("images").stats()["votes"]["bytes"]
    tick = time.perf_counter()
    list(client.index_images([(f"big{i}", d, "", {}) for i, d in enumerate(photos_12mp)]))
    index_rate = len(photos_12mp) / (time.perf_counter() - tick)
    queries = [edited(d, "crop", np.random.default_rng(i)) for i, d in enumerate(photos_12mp[:8])]
    queries = [photos_12mp[i] for i in range(8)] + queries
    latencies: dict[bool, list[float]] = {True: [], False: []}  # indexed -> seconds
    tagged = [(d, True) for d in queries] + [(d, False) for d in unknown]
    for data, indexed in tagged * (1 if quick else 2):
        tick = time.perf_counter()
        client.search(image=data, k=10)
        latencies[indexed].append(time.perf_counter() - tick)
    collection = server.running.service.store.get("images")
    per_photo = (_store_bytes(server) - before) / len(photos_12mp)
    votes_per_photo = (collection.stats()["votes"]["bytes"] - votes_before) / len(photos_12mp)
    return {
        "index_12mp_photos_per_s": round(index_rate, 2),
        "search_ms_12mp_p50": round(1000 * float(np.median(latencies[True])), 1),
        "search_ms_12mp_p95": round(1000 * float(np.percentile(latencies[True], 95)), 1),
        "search_ms_12mp_not_indexed_p50": round(1000 * float(np.median(latencies[False])), 1),
        "search_ms_12mp_all_p50": round(
            1000 * float(np.median(latencies[True] + latencies[False])), 1
        ),
        "store_bytes_per_photo": round(per_photo),
        "index_ram_bytes_per_item": 4 * collection.config.dim,
        "vote_ram_bytes_per_photo": round(votes_per_photo),
        "jpeg_12mp_mean_bytes": round(float(np.mean([len(d) for d in photos_12mp]))),
    }


ALL = dict(orientations=True, trimmed=True, windows=True)
#: name -> (views, verify, reach, voted)
VARIANTS = {
    "whole view only": (dict(orientations=False, trimmed=False, windows=False), False, 0, 0),
    "+ 8 orientations": (dict(orientations=True, trimmed=False, windows=False), False, 0, 0),
    "+ border trimmed": (dict(orientations=True, trimmed=True, windows=False), False, 0, 0),
    "+ windows": (ALL, False, 0, 0),
    f"+ local features, first {VERIFIED} candidates": (ALL, True, VERIFIED, 0),
    f"+ local features up to {REACH} when unsure": (ALL, True, REACH, 0),
    f"+ the {VOTED} photos local features vote for (all)": (ALL, True, REACH, VOTED),
}


def ablation(bundle: Path) -> dict:
    """Each variant: calibrated alone, then the quick evaluation set through the service core."""
    import shutil

    from simclr_search.serving.core.config import ServiceConfig
    from simclr_search.serving.core.copy_scores import CopyCalibration
    from simclr_search.serving.core.photo_views import ViewSet
    from simclr_search.serving.jobs.calibrate import (
        CalibrationSet,
        calibrate_bundle,
        measure,
    )

    images = photos()
    r = roles(list(images))
    originals, negatives = r["originals"][::3], r["negatives"][::3]
    index = {n: images[n] for n in originals}
    index.update(crops(images, r["distractor_sources"], 10, SEED + 3))
    index.update(cifar_images("test", 200, SEED + 4))
    evaluation = CalibrationSet(
        {n: images[n] for n in originals},
        {n: images[n] for n in negatives},
        {n: d for n, d in index.items() if n not in originals},
    )
    out = []
    with tempfile.TemporaryDirectory(prefix="simclr-ablation-") as tmp:
        for name, (parts, verify, reach, voted) in VARIANTS.items():
            variant = Path(tmp) / "bundle"
            shutil.rmtree(variant, ignore_errors=True)
            shutil.copytree(bundle, variant)
            views = ViewSet(**parts)
            calibrate_bundle(
                variant,
                search_calibration(images),
                pair_data=calibration_set(images, 300),
                progress=False,
                views=views,
                verify=verify,
                reach=reach,
                voted=voted,
            )
            config = ServiceConfig(bundle=variant, store=Path(tmp) / f"store-{len(out)}")
            measured = asyncio.run(
                measure(config, evaluation, SEED + 6, False, views, verify, reach, voted=voted)
            )
            model = CopyCalibration.load(variant)
            scores = model.probability(measured["whole"], measured["window"], measured["inliers"])
            result = evaluate(
                [
                    ("t" if positive else None, str(family), "t" if correct else "n", float(p))
                    for positive, family, correct, p in zip(
                        measured["positive"],
                        measured["family"],
                        measured["correct"],
                        scores,
                        strict=True,
                    )
                ]
            )
            out.append({"variant": name, **result})
            print(name, json.dumps(result), flush=True)
    return {"ablation": out}


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    emit(ablation(arguments.bundle) if arguments.ablation else main(arguments))
