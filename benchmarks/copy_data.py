"""The photo sets of the copy-detection benchmark and of the shipped bundle's calibration.

Photos: Kodak24 and CBSD68 (``../shared/datasets/denoise-eval``), 92 in all, split once by a fixed
seed into disjoint roles, so the calibration never sees an evaluation photo:

| role | photos | use |
| --- | --- | --- |
| calibration originals / negatives / distractor sources | 16 / 8 / 4 CBSD68 | ``--calibrate`` |
| evaluation originals (indexed) | 16 Kodak24 + 24 CBSD68 | queried with an edit of each family |
| evaluation negatives (never indexed) | 8 Kodak24 + 12 CBSD68 | queried the same way: no match |
| evaluation distractor sources | 4 CBSD68 | 40 crops each, indexed |

Distractors also include CIFAR-10 images: test for the evaluation, train for the calibration.
The search calibration indexes as many distractors as the evaluation (:func:`search_calibration`):
a query without a copy meets its most alike stranger in an index of that size, and a smaller
index would fit the threshold to strangers less alike than the evaluation's.
"""

from __future__ import annotations

import tarfile

import numpy as np

from benchmarks.common import SHARED, cifar
from simclr_search.edits import edited
from simclr_search.serving.jobs.calibrate import CalibrationSet

SEED = 2026


def photos() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in ("Kodak24", "CBSD68"):
        path = SHARED / "denoise-eval" / f"{name}.tar"
        if not path.exists():
            raise SystemExit(f"benchmark needs {path} (../shared/datasets); it is not present")
        with tarfile.open(path) as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.isfile() and member.name.endswith(".png"):
                    out[member.name] = tar.extractfile(member).read()
    return out


def roles(names: list[str]) -> dict[str, list[str]]:
    rng = np.random.default_rng(SEED)
    kodak = [str(n) for n in rng.permutation(sorted(n for n in names if n.startswith("Kodak")))]
    cbsd = [str(n) for n in rng.permutation(sorted(n for n in names if n.startswith("CBSD")))]
    return {
        "cal_originals": cbsd[:16],
        "cal_negatives": cbsd[16:24],
        "cal_distractor_sources": cbsd[24:28],
        "originals": kodak[:16] + cbsd[28:52],
        "negatives": kodak[16:24] + cbsd[52:64],
        "distractor_sources": cbsd[64:68],
    }


def cifar_images(split: str, count: int, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    with tarfile.open(cifar(split)) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        pick = sorted(rng.choice(len(members), count, replace=False))
        return {f"cifar-{members[i].name}": tar.extractfile(members[i]).read() for i in pick}


def crops(images: dict[str, bytes], names: list[str], per: int, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {f"{n}#crop{j}": edited(images[n], "crop", rng) for n in names for j in range(per)}


def calibration_set(
    images: dict[str, bytes], cifar_count: int, crops_per_source: int = 10
) -> CalibrationSet:
    r = roles(list(images))
    distractors = crops(images, r["cal_distractor_sources"], crops_per_source, SEED + 1)
    distractors.update(cifar_images("train", cifar_count, SEED + 2))
    return CalibrationSet(
        {n: images[n] for n in r["cal_originals"]},
        {n: images[n] for n in r["cal_negatives"]},
        distractors,
    )


def search_calibration(images: dict[str, bytes]) -> CalibrationSet:
    """The search model's calibration set: 1,000 CIFAR-10 train images and 40 crops of each
    distractor source, the evaluation's index size (``bench_copy_detection.py``)."""
    return calibration_set(images, 1000, 40)
