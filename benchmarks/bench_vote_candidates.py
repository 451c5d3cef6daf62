"""Candidates from local features, chosen on the calibration split: how many of each stored photo's
ORB descriptors to keep as vote codes, how many of a query's vote, and how many voted photos to
verify.

A design experiment (no calibrated model): the calibration split of ``benchmarks/copy_data.py``
(16 originals and 8 negatives from CBSD68, 1,160 distractors; never an evaluation photo) is
indexed, each original and negative is edited once per family per seed, and for each query:

* the rank of its original by the embedding (the query views' best cosine, a turned view
  ``TURNED_PENALTY`` less, as the server scores them);
* the rank of its original by votes (``index.code_votes``): each of the query's strongest
  descriptors votes for the photo owning its nearest stored code, within
  ``local_features.VOTE_DISTANCE`` bits and past Lowe's ratio ``VOTE_RATIO``.

Printed per variant (stored codes per photo, query codes, the query's mirror image voting or
not): how many originals the top-V voted photos hold, and how many the union of those with the
embedding's first ``REACH`` (the candidates verification reaches) holds; and the votes the best
stranger gets for a negative, against the votes an original gets.

    python benchmarks/bench_vote_candidates.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_stored_view import MAX_PIXELS, Embedder, calibration_library, query, stored
from benchmarks.common import emit
from simclr_search.edits import FAMILIES, edited
from simclr_search.index.code_votes import CodeVotes
from simclr_search.serving.core import local_features, photo_views
from simclr_search.serving.core.copy_search import REACH, TURNED_PENALTY

ROOT = Path(__file__).resolve().parents[1]
#: (stored codes per photo, query codes, mirror image votes too)
VARIANTS = [
    (400, 800, True),
    (128, 400, False),
    (64, 800, True),
    (64, 400, False),
    (32, 400, False),
]
TOPS = (1, 4, 8)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "compact-cifar10")
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 11], help="edit seeds")
    return p


def main(args: argparse.Namespace) -> dict:
    embed = Embedder(args.bundle)
    data, names, decoded = calibration_library()
    bank = np.stack([stored(embed, p, "tiles") for p in decoded])
    orb = local_features.LocalFeatures()
    features = [orb.extract(p)[1] for p in decoded]  # strongest first
    votes = {}
    for codes, _, _ in VARIANTS:
        if codes not in votes:
            votes[codes] = CodeVotes(32)
            votes[codes].add((j, f[:codes].tobytes()) for j, f in enumerate(features))
    rows = []  # (positive, embedding rank, {variant: (vote rank, original's votes, best votes)})
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        for positive, source in ((True, data.originals), (False, data.negatives)):
            for name, blob in source.items():
                for family in FAMILIES:
                    pixels = photo_views.photo(edited(blob, family, rng), MAX_PIXELS)
                    vectors, turned = query(embed, pixels, "tiles")
                    best = (vectors @ bank.T - TURNED_PENALTY * turned[:, None]).max(0)
                    truth = names.index(name) if positive else -1
                    rank = int(np.flatnonzero(np.argsort(-best) == truth)[0]) if positive else -1
                    sides = [orb.extract(pixels, features=800)[1]]
                    sides.append(orb.extract(pixels, mirror=True, features=800)[1])
                    by_variant = {}
                    for variant in VARIANTS:
                        codes, asked, mirror = variant
                        count = np.zeros(len(names))
                        for side in sides[: 2 if mirror else 1]:
                            if len(side):
                                ids, n = votes[codes].vote(
                                    side[:asked],
                                    len(names),
                                    local_features.VOTE_DISTANCE,
                                    local_features.VOTE_RATIO,
                                )
                                count[ids] = np.maximum(count[ids], n)
                        order = np.argsort(-count, kind="stable")
                        vote_rank = int(np.flatnonzero(order == truth)[0]) if positive else -1
                        by_variant[variant] = (
                            vote_rank,
                            count[truth] if positive else 0,
                            count[order[0]],
                        )
                    rows.append((positive, rank, by_variant))
    pos = [r for r in rows if r[0]]
    neg = [r for r in rows if not r[0]]
    out = {
        "queries_with_original": len(pos),
        f"embedding_misses_beyond_{REACH}": sum(r[1] >= REACH for r in pos),
        "variants": [],
    }
    for variant in VARIANTS:
        codes, asked, mirror = variant
        result = {"stored_codes": codes, "query_codes": asked, "mirror_votes": mirror}
        for top in TOPS:
            result[f"voted_top{top}"] = sum(r[2][variant][0] < top for r in pos)
            result[f"union_top{top}_reach{REACH}"] = sum(
                r[2][variant][0] < top or r[1] < REACH for r in pos
            )
        result["negative_best_votes_p50_p95_max"] = np.percentile(
            [r[2][variant][2] for r in neg], [50, 95, 100]
        ).tolist()
        result["original_votes_p10_p50"] = np.percentile(
            [r[2][variant][1] for r in pos], [10, 50]
        ).tolist()
        print(result, flush=True)
        out["variants"].append(result)
    return {"calibration_split": out, "indexed": len(names)}


if __name__ == "__main__":
    emit(main(get_args_parser().parse_args()))
