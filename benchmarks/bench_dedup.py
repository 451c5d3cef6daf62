"""Duplicate finding on a labelled photo library through the server, beside imagededup.

The library (``benchmarks/copy_data.py``'s photos, never the calibration split unless ``--dev``):
each evaluation original with :data:`COPIES` edited copies (edit families of
``simclr_search.edits``, drawn per original) and every :data:`EXACT_EVERY`-th original also as a
byte-identical second file; the evaluation negatives as distinct photos; CIFAR-10 test images as
distinct small pictures. Truth: two files are a pair when they come from one photo.

Ours: a real gRPC server (the bundle, a fresh store) indexes the folder with IndexImages, and
FindDuplicates returns the groups; every two files of a group are a predicted pair.
imagededup (Jain et al., idealo): PHash (``max_distance_threshold`` 10, its default) and CNN
(``min_similarity_threshold`` 0.9, its default). Its CNN method downloads MobileNetV3 ImageNet
weights, which this machine cannot fetch; without ``--mobilenet-weights FILE`` it runs with our
encoder in its place (the same global-embedding-and-threshold method on our features). Each
baseline also runs at the threshold that gave its best F1 on the dev library (built the same way
from the calibration split), so neither is judged at a default that does not suit these images.
Reported: pair precision, recall, F1 and seconds (ours: IndexImages + FindDuplicates).

Scale (not with ``--quick``): FindDuplicates over a collection of ``--scale`` items (default
100,000), already embedded: the vectors are the encoder's for CIFAR-10 train + test and edited
copies of train images (flipped, cropped, re-encoded), each item with a photo's full set of local
features (``benchmarks/dedup_scale.py`` says how), so every candidate pair is verified as a photo
library's would be.

    python benchmarks/bench_dedup.py --calibrate   # fit the pair model on the calibration split
    python benchmarks/bench_dedup.py --quick
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_copy_detection import Server
from benchmarks.common import emit
from benchmarks.copy_data import (
    SEED,
    calibration_set,
    cifar_images,
    photos,
    roles,
)
from simclr_search.edits import FAMILIES, edited

ROOT = Path(__file__).resolve().parents[1]
COPIES = 3
EXACT_EVERY = 4
PHASH_THRESHOLDS = (0, 2, 4, 6, 8, 10, 12, 14, 16, 20)
CNN_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def _extension(data: bytes) -> str:
    return {"JPEG": ".jpg", "PNG": ".png"}.get(Image.open(io.BytesIO(data)).format, ".img")


def build_library(
    images: dict[str, bytes], originals: list[str], negatives: list[str], cifar: int, seed: int
) -> tuple[dict[str, bytes], dict[str, str]]:
    """``(files: name -> bytes, source: name -> the photo it comes from)``."""
    rng = np.random.default_rng(seed)
    files, source = {}, {}
    for n, name in enumerate(originals):
        stem = Path(name).stem
        files[f"{stem}{_extension(images[name])}"] = images[name]
        if n % EXACT_EVERY == 0:
            files[f"{stem}-same{_extension(images[name])}"] = images[name]
        for family in rng.choice(list(FAMILIES), COPIES, replace=False):
            files[f"{stem}-{family}.jpg"] = edited(images[name], str(family), rng)
        for f in files:
            source.setdefault(f, name)
    for name in negatives:
        files[Path(name).name] = images[name]
        source[Path(name).name] = name
    for name, data in cifar_images("test", cifar, seed + 1).items():
        flat = name.replace("/", "_")
        files[flat] = data
        source[flat] = flat
    return files, source


def _by_source(source: dict[str, str]) -> dict[str, list[str]]:
    by_source: dict[str, list[str]] = {}
    for f, s in source.items():
        by_source.setdefault(s, []).append(f)
    return by_source


def true_pairs(source: dict[str, str]) -> set[frozenset[str]]:
    groups = _by_source(source).values()
    return {frozenset(p) for fs in groups for p in itertools.combinations(fs, 2)}


def score(predicted: set[frozenset[str]], truth: set[frozenset[str]], seconds: float) -> dict:
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pairs": len(predicted),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "seconds": round(seconds, 2),
    }


def group_pairs(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}


def ours(bundle: Path, folder: Path, files: dict[str, bytes], store: Path) -> tuple[set, float]:
    from simclr_search.serving.client import Client

    server = Server(bundle, store)
    try:
        with Client(server.address, timeout=600) as client:
            tick = time.perf_counter()
            items = [(name, data, str(folder / name), {}) for name, data in files.items()]
            results = list(client.index_images(items))
            groups = [[g.keep.id] + [c.id for c in g.copies] for g in client.find_duplicates()]
            seconds = time.perf_counter() - tick
        failed = [r.id for r in results if r.status == 3]
        assert not failed, f"images failed to index: {failed[:5]}"
        # A byte-identical second file is stored once (IndexImages skips it by content hash):
        # it is in the group of the file it repeats.
        same = {n: n.replace("-same", "") for n in files if "-same" in n}
        for g in groups:
            g.extend(s for s, orig in same.items() if orig in g)
        for s, orig in same.items():
            if not any(orig in g for g in groups):
                groups.append([orig, s])
    finally:
        server.stop()
    return group_pairs(groups), seconds


class _OurEncoder:
    """Our ONNX encoder as the torch module imagededup's CNN method calls (its CustomModel)."""

    def __init__(self, bundle: Path) -> None:
        from simclr_search.bundle.manifest import load_manifest
        from simclr_search.bundle.runtime import Encoder

        self.manifest = load_manifest(bundle)
        self.encoder = Encoder(self.manifest, False, "cpu", 2)

    def transform(self, image):
        import torch

        from simclr_search.bundle.preprocess import normalize

        side = self.manifest.input_size
        pixels = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
        batch = normalize(pixels[None], self.manifest.mean, self.manifest.std)
        return torch.from_numpy(batch[0])

    def __call__(self, x):
        import torch

        return torch.from_numpy(self.encoder(x.numpy()))

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self


def imagededup_pairs(folder: Path, method: str, threshold: float, encodings=None):
    """imagededup's direct pairs at ``threshold`` (its encodings reused across thresholds)."""
    if method == "phash":
        duplicates = _phash().find_duplicates(
            encoding_map=encodings, max_distance_threshold=int(threshold)
        )
    else:
        duplicates = encodings[1].find_duplicates(
            encoding_map=encodings[0], min_similarity_threshold=threshold, num_sim_workers=1
        )
    return {frozenset((a, b)) for a, bs in duplicates.items() for b in bs}


def _phash():
    from imagededup.methods import PHash

    return PHash(verbose=False)


def encode(folder: Path, method: str, bundle: Path, weights: Path | None):
    tick = time.perf_counter()
    if method == "phash":
        encodings = _phash().encode_images(image_dir=str(folder))
    else:
        from imagededup.methods import CNN
        from imagededup.utils.models import CustomModel

        if weights is not None:
            import torch
            import torchvision

            net = torchvision.models.mobilenet_v3_small()
            net.load_state_dict(torch.load(weights, map_location="cpu"))
            cnn = CNN(verbose=False)  # imagededup's own MobileNetV3, with the given weights
            cnn.model.mobilenet_gap_op = torch.nn.Sequential(net.features, net.avgpool)
        else:
            model = _OurEncoder(bundle)
            cnn = CNN(
                verbose=False,
                model_config=CustomModel(
                    name="simclr-search", model=model, transform=model.transform
                ),
            )
        encodings = (cnn.encode_images(image_dir=str(folder)), cnn)
    return encodings, time.perf_counter() - tick


def baselines(folder: Path, truth: set, bundle: Path, weights, thresholds: dict) -> dict:
    out = {}
    for method, default, grid in (
        ("phash", 10, PHASH_THRESHOLDS),
        ("cnn", 0.9, CNN_THRESHOLDS),
    ):
        encodings, seconds = encode(folder, method, bundle, weights)
        tick = time.perf_counter()
        at_default = imagededup_pairs(folder, method, default, encodings)
        seconds += time.perf_counter() - tick
        out[method] = score(at_default, truth, seconds) | {"threshold": default}
        if method in thresholds:
            tuned = imagededup_pairs(folder, method, thresholds[method], encodings)
            out[f"{method}_dev_tuned"] = score(tuned, truth, seconds) | {
                "threshold": thresholds[method]
            }
        else:  # the dev run: every threshold of the grid
            out[f"{method}_grid"] = {
                str(t): score(imagededup_pairs(folder, method, t, encodings), truth, 0)["f1"]
                for t in grid
            }
    return out


def run_library(args, images, originals, negatives, cifar, seed, thresholds) -> dict:
    files, source = build_library(images, originals, negatives, cifar, seed)
    truth = true_pairs(source)
    with tempfile.TemporaryDirectory(prefix="simclr-dedup-bench-") as tmp:
        folder = Path(tmp) / "library"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        predicted, seconds = ours(args.bundle, folder, files, Path(tmp) / "store")
        result = {
            "files": len(files),
            "true_groups": sum(1 for fs in _by_source(source).values() if len(fs) > 1),
            "true_pairs": len(truth),
            "ours": score(predicted, truth, seconds),
        }
        result.update(baselines(folder, truth, args.bundle, args.mobilenet_weights, thresholds))
    return result


def best_threshold(grid: dict[str, float]) -> float:
    return float(max(grid, key=lambda t: (grid[t], -abs(float(t)))))


def main(args: argparse.Namespace) -> dict:
    images = photos()
    r = roles(list(images))
    if args.calibrate:
        from simclr_search.serving.jobs.calibrate import calibrate_pairs

        decision = calibrate_pairs(
            args.bundle,
            calibration_set(images, 300),
            described_as="benchmarks/copy_data.py calibration split (CBSD68) + CIFAR-10 train",
            progress=False,
        )
        print(f"calibrated pairs: threshold {decision.threshold:.3f}", flush=True)
    cifar = 100 if args.quick else 300
    dev = run_library(args, images, r["cal_originals"], r["cal_negatives"], cifar, SEED + 20, {})
    thresholds = {
        "phash": best_threshold(dev["phash_grid"]),
        "cnn": best_threshold(dev["cnn_grid"]),
    }
    print(f"dev library: {dev}", flush=True)
    originals = r["originals"][:: 2 if args.quick else 1]
    result = run_library(args, images, originals, r["negatives"], cifar, SEED + 21, thresholds)
    result["dev"] = {"ours_f1": dev["ours"]["f1"], "thresholds": thresholds}
    result["cnn_model"] = (
        "MobileNetV3 (given weights)" if args.mobilenet_weights else "our encoder (no weights)"
    )
    if not args.quick:
        from benchmarks.dedup_scale import scale_run

        result["scale"] = scale_run(args.bundle, args.scale)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "compact-cifar10")
    p.add_argument("--quick", action="store_true", help="half the originals, no scale run")
    p.add_argument("--calibrate", action="store_true", help="fit the bundle's pair model first")
    p.add_argument("--scale", type=int, default=100_000, help="items of the scale run")
    p.add_argument("--mobilenet-weights", type=Path, help="torchvision mobilenet_v3_small .pth")
    return p


if __name__ == "__main__":
    emit(main(get_args_parser().parse_args()))
