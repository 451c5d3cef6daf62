"""``simclr calibrate-copies``: fit the copy decision of a bundle on the user's own photos.

A search by image says ``is_copy`` from a probability (``serving/core/copy_scores.py``). The
probability is fitted here, through the service core's own search path, on a calibration set:

* originals are indexed among distractors (crops of other photos, plus ``distractors``);
* each original and each *negative* photo (never indexed) is edited once per edit family
  (``simclr_search.edits``) and searched for;
* each query's best hit is a copy when it is the query's original; a logistic model of the hit's
  three measurements is fitted to that, and the threshold that reaches ``precision`` is kept;
* for the duplicate finder (``serving/core/dedup.py``), each original is indexed again with a few
  edited copies beside the negatives, and the same kind of model is fitted on every candidate pair
  of stored images (cosine and inliers; a pair is a copy when both come from one photo).

The result goes to ``BUNDLE/copy_calibration.json`` with what it was fitted on. Calibrate on photos
you will not evaluate on: the benchmark (``benchmarks/bench_copy_detection.py``) keeps its
calibration and evaluation splits apart.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from simclr_search.edits import FAMILIES, edited
from simclr_search.serving.core.config import ServiceConfig
from simclr_search.serving.core.copy_scores import CopyCalibration, calibrate
from simclr_search.serving.core.copy_search import REACH
from simclr_search.serving.core.dedup import FLOOR, measure_pairs
from simclr_search.serving.core.local_features import VOTED
from simclr_search.serving.core.pair_scores import PairDecision, fit_pairs
from simclr_search.serving.core.photo_views import ALL_VIEWS, ViewSet
from simclr_search.serving.core.service import SearchService


@dataclass(frozen=True)
class CalibrationSet:
    """Encoded images: ``originals`` are indexed, ``negatives`` are not, ``distractors`` are
    indexed and never queried (name -> bytes each)."""

    originals: dict[str, bytes]
    negatives: dict[str, bytes]
    distractors: dict[str, bytes]


def split_library(
    images: dict[str, bytes], seed: int, crops_per_source: int = 10
) -> CalibrationSet:
    """Half the photos as originals, a quarter as negatives, a quarter cut into distractor crops."""
    names = sorted(images)
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    half, three_quarters = len(order) // 2, (3 * len(order)) // 4
    distractors = {
        f"{name}#crop{j}": edited(images[name], "crop", rng)
        for name in order[three_quarters:]
        for j in range(crops_per_source)
    }
    return CalibrationSet(
        {n: images[n] for n in order[:half]},
        {n: images[n] for n in order[half:three_quarters]},
        distractors,
    )


async def measure(
    config: ServiceConfig,
    data: CalibrationSet,
    seed: int,
    progress: bool = True,
    views: ViewSet = ALL_VIEWS,
    verify: bool = True,
    reach: int = REACH,
    calibration: CopyCalibration | Literal["bundle"] | None = "bundle",
    voted: int = VOTED,
) -> dict[str, np.ndarray]:
    """Index ``data`` in a fresh store and answer every edited query through the service core:
    the best hit's measurements and whether it is the query's original. ``views``, ``verify``,
    ``reach`` and ``voted`` choose the parts of copy detection (all, as the server runs it; the
    benchmark's ablation); ``calibration`` orders the hits (the bundle's own by default; None:
    by cosine)."""
    service = SearchService(config)
    await service.start()
    if calibration != "bundle":
        service.copies.calibration = calibration
    service.copies.views = views
    service.copies.verify = verify and service.copies.verify
    service.copies.reach = reach
    service.copies.voted = voted
    try:
        indexed = list(data.originals.items()) + list(data.distractors.items())
        for start in range(0, len(indexed), 64):
            batch = [(name, blob, name, "") for name, blob in indexed[start : start + 64]]
            await service.index_images("", batch)
        rng = np.random.default_rng(seed + 1)
        sources = [(n, b, True) for n, b in data.originals.items()]
        sources += [(n, b, False) for n, b in data.negatives.items()]
        rows = []
        queries = [(n, b, pos, f) for n, b, pos in sources for f in FAMILIES]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(queries), desc="calibration queries", unit="query")
        for name, blob, positive, family in queries:
            hits = await service.search("", 1, image=edited(blob, family, rng))
            if hits:
                top = hits[0]
                correct = positive and top.hit.external_id == name
                rows.append((top.whole, top.window, top.inliers, correct, positive, family))
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    finally:
        await service.stop()
    columns = [np.array(column) for column in zip(*rows, strict=True)]
    names = ("whole", "window", "inliers", "correct", "positive", "family")
    return dict(zip(names, columns, strict=True))


#: Edited copies made of each original for the pair model (each of a different family).
PAIR_COPIES = 5
#: The pair model's precision: stricter than one search answer's, because the duplicate finder
#: joins groups by any one accepted pair, so one false pair merges two groups of copies.
PAIR_PRECISION = 0.98


async def measure_pair_set(
    config: ServiceConfig, data: CalibrationSet, seed: int, progress: bool = True
) -> dict[str, np.ndarray]:
    """Index each original with :data:`PAIR_COPIES` edited copies, the negatives and the
    distractors in a fresh collection; every candidate pair of the duplicate finder, verified, and
    whether its two images come from one photo."""
    config = dataclasses.replace(config, default_collection="calibration-pairs")
    service = SearchService(config)
    await service.start()
    rng = np.random.default_rng(seed + 2)
    source: dict[str, str] = {}
    items: list[tuple[str, bytes]] = []
    for name, blob in data.originals.items():
        items.append((name, blob))
        source[name] = name
        for family in rng.choice(list(FAMILIES), PAIR_COPIES, replace=False):
            copy = f"{name}#{family}"
            items.append((copy, edited(blob, str(family), rng)))
            source[copy] = name
    for name, blob in [*data.negatives.items(), *data.distractors.items()]:
        items.append((name, blob))
        source[name] = name.split("#")[0]  # crops of one photo ("photo#cropN") are its copies
    try:
        for start in range(0, len(items), 64):
            batch = [(n, b, n, "") for n, b in items[start : start + 64]]
            await service.index_images("", batch)
        collection = service.store.get(config.default_collection)
        evidence = measure_pairs(collection, FLOOR, threads=config.decode_threads)
        names = collection.items_by_internal(np.concatenate([evidence.a, evidence.b]).tolist())
    finally:
        await service.stop()
    # Two crops of one distractor photo may barely overlap: neither a copy nor a non-copy
    # anyone would agree on, so such pairs are left out of the fit.
    keep, same = [], []
    for n, (a, b) in enumerate(zip(evidence.a.tolist(), evidence.b.tolist(), strict=True)):
        name_a, name_b = names[a].external_id, names[b].external_id
        ambiguous = name_a in data.distractors and name_b in data.distractors
        if ambiguous and source[name_a] == source[name_b]:
            continue
        keep.append(n)
        same.append(source[name_a] == source[name_b])
    if progress:
        print(f"calibration pairs: {len(same)} candidates, {sum(same)} copies")
    return {
        "cosine": evidence.cosine[keep],
        "inliers": evidence.inliers[keep],
        "spread": evidence.spread[keep],
        "correct": np.array(same),
    }


def fit_pair_decision(
    pairs: dict[str, np.ndarray],
    data: CalibrationSet,
    precision: float,
    seed: int,
    described_as: str,
) -> PairDecision:
    fitted_on = {
        "images": described_as,
        "originals": len(data.originals),
        "copies_each": PAIR_COPIES,
        "negatives": len(data.negatives),
        "distractors": len(data.distractors),
        "pairs": len(pairs["correct"]),
        "seed": seed,
    }
    return fit_pairs(
        pairs["cosine"], pairs["inliers"], pairs["spread"], pairs["correct"], precision, fitted_on
    )


def calibrate_pairs(
    bundle: Path,
    data: CalibrationSet,
    precision: float = PAIR_PRECISION,
    seed: int = 0,
    described_as: str = "",
    progress: bool = True,
) -> PairDecision:
    """Fit the duplicate finder's pair model alone and store it beside the bundle's existing
    search calibration (which must exist: run :func:`calibrate_bundle` first)."""
    existing = CopyCalibration.load(Path(bundle))
    if existing is None:
        raise ValueError(f"{bundle} has no copy_calibration.json yet: run simclr calibrate-copies")
    with tempfile.TemporaryDirectory(prefix="simclr-calibrate-") as store:
        config = ServiceConfig(bundle=Path(bundle), store=Path(store), tie_break_margin=0.0)
        pairs = asyncio.run(measure_pair_set(config, data, seed, progress))
    decision = fit_pair_decision(pairs, data, precision, seed, described_as)
    dataclasses.replace(existing, pairs=decision).save(Path(bundle))
    return decision


def calibrate_bundle(
    bundle: Path,
    data: CalibrationSet,
    precision: float = 0.9,
    seed: int = 0,
    described_as: str = "",
    progress: bool = True,
    views: ViewSet = ALL_VIEWS,
    verify: bool = True,
    pair_precision: float = PAIR_PRECISION,
    reach: int = REACH,
    pair_data: CalibrationSet | None = None,
    voted: int = VOTED,
) -> CopyCalibration:
    """Fit and store the bundle's copy calibration; returns it. ``pair_data``: the duplicate
    finder's set, if not ``data``."""
    for value in (precision, pair_precision):
        if not 0 < value < 1:
            raise ValueError(f"precision must be between 0 and 1, got {value}")
    if len(data.originals) < 4 or len(data.negatives) < 2:
        raise ValueError("calibration needs at least 4 originals and 2 negative photos")
    parts = dict(views=views, verify=verify, reach=reach, voted=voted)
    with tempfile.TemporaryDirectory(prefix="simclr-calibrate-") as store:
        config = ServiceConfig(bundle=Path(bundle), store=Path(store), tie_break_margin=0.0)
        # Which hit comes first depends on the model that orders the hits, so the fit does not
        # start from the bundle's last one (each refit would then differ from the one before):
        # one pass ordered by cosine, then the fit of it orders the pass that is kept.
        first = dataclasses.replace(config, store=Path(store) / "by-cosine")
        measured = asyncio.run(measure(first, data, seed, progress, calibration=None, **parts))
        ordering = _fit(measured, precision, {})
        kept = dataclasses.replace(config, store=Path(store) / "by-probability")
        measured = asyncio.run(measure(kept, data, seed, progress, calibration=ordering, **parts))
        pairs_config = dataclasses.replace(config, store=Path(store) / "pairs")
        pairs = asyncio.run(measure_pair_set(pairs_config, pair_data or data, seed, progress))
    fitted_on = {
        "images": described_as,
        "originals": len(data.originals),
        "negatives": len(data.negatives),
        "distractors": len(data.distractors),
        "queries": len(measured["correct"]),
        "families": list(FAMILIES),
        "seed": seed,
    }
    model = _fit(measured, precision, fitted_on)
    model = dataclasses.replace(
        model,
        pairs=fit_pair_decision(pairs, pair_data or data, pair_precision, seed, described_as),
    )
    model.save(Path(bundle))
    return model


def _fit(measured: dict[str, np.ndarray], precision: float, fitted_on: dict) -> CopyCalibration:
    return calibrate(
        measured["whole"],
        measured["window"],
        measured["inliers"],
        measured["correct"],
        precision,
        fitted_on,
    )


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="fit a bundle's copy decision (is_copy) on edited copies of your own photos; "
        "writes BUNDLE/copy_calibration.json",
        add_help=add_help,
    )
    p.add_argument("images", help="folder or .tar archive of photos (at least 16; 100+ is better)")
    p.add_argument("--bundle", type=Path, default=Path("bundle"), help="model bundle to calibrate")
    p.add_argument("--precision", type=float, default=0.9, help="precision is_copy is fitted for")
    p.add_argument(
        "--pair-precision",
        type=float,
        default=PAIR_PRECISION,
        help="precision the duplicate finder's pair model is fitted for",
    )
    p.add_argument("--seed", type=int, default=0, help="split and edit seed")
    p.add_argument(
        "--pairs-only",
        action="store_true",
        help="refit only the duplicate finder's pair model (keeps the search calibration)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from simclr_search.bundle.sources import iter_image_bytes

    images = {str(record.uri): data for record, data in iter_image_bytes(args.images)}
    data = split_library(images, args.seed)
    if args.pairs_only:
        decision = calibrate_pairs(
            args.bundle, data, args.pair_precision, args.seed, str(args.images), args.progress
        )
        print(
            f"simclr calibrate-copies: pair model in {Path(args.bundle) / 'copy_calibration.json'}"
            f" (threshold {decision.threshold:.3f}, {decision.fitted_on['pairs']} pairs)"
        )
        return 0
    model = calibrate_bundle(
        args.bundle,
        data,
        args.precision,
        args.seed,
        str(args.images),
        args.progress,
        pair_precision=args.pair_precision,
    )
    print(
        f"simclr calibrate-copies: wrote {Path(args.bundle) / 'copy_calibration.json'} "
        f"(threshold {model.threshold:.3f} for precision {model.target_precision:g}, "
        f"{model.fitted_on['queries']} queries)"
    )
    return 0
