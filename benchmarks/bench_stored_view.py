"""How a stored photo becomes one vector, chosen on the calibration split: the centre square
against the mean of the squares that cover the whole picture.

A design experiment on the embedding alone (no local features, no calibrated model), so that the
choice rests on what the vector itself finds: the calibration split of ``benchmarks/copy_data.py``
(16 originals and 8 negatives from CBSD68, 1,160 distractors; never an evaluation photo) is
indexed with each policy, each original and negative is edited once per family per seed, and the
query's views (``photo_views.query_views``: 8 orientations, border-trimmed, windows) score every
stored image by their best cosine, a turned view ``TURNED_PENALTY`` less, as the server scores
them. Printed per policy: top-1 over the originals' edits, the families under 1.0, and micro-AP
over each query's best answer (negatives' answers always wrong).

* ``centre``: the picture's centre square (the shorter side resized to the input size), and the
  query's whole views the same square in 8 orientations;
* ``tiles``: the squares along the longer side (``bundle.preprocess.square_tiles``), their
  embeddings averaged (``pool_tiles``), for stored images and the query's whole views alike; the
  server's policy.

    python benchmarks/bench_stored_view.py --seeds 7 11
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit
from benchmarks.copy_data import CalibrationSet, photos, search_calibration
from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.preprocess import normalize, pool_tiles
from simclr_search.bundle.runtime import Encoder
from simclr_search.edits import FAMILIES, edited
from simclr_search.serving.core import photo_views
from simclr_search.serving.core.copy_search import TURNED_PENALTY

ROOT = Path(__file__).resolve().parents[1]
MAX_PIXELS = 100_000_000


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "compact-cifar10")
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 11], help="edit seeds")
    return p


class Embedder:
    def __init__(self, bundle: Path) -> None:
        self.manifest = load_manifest(bundle)
        self.encoder = Encoder(self.manifest, device="cpu")
        self.size = self.manifest.input_size

    def __call__(self, squares: np.ndarray, counts: np.ndarray) -> np.ndarray:
        rows = self.encoder(normalize(squares, self.manifest.mean, self.manifest.std))
        return pool_tiles(rows, counts)


def stored(embed: Embedder, pixels: np.ndarray, policy: str) -> np.ndarray:
    if policy == "centre":
        return embed(photo_views.square(pixels, embed.size)[None], np.ones(1, int))[0]
    squares = photo_views.tiles(pixels, embed.size)
    return embed(squares, np.array([len(squares)]))[0]


def query(embed: Embedder, pixels: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """``(V, D)`` view vectors and ``(V,)`` whether each counts :data:`TURNED_PENALTY` less."""
    if policy == "tiles":
        views = photo_views.query_views(pixels, embed.size)
        vectors = embed(views.squares, views.counts)
        kinds = views.kinds
    else:  # the same views, each whole one the centre square (as the server had them)
        size = embed.size
        whole = photo_views._dihedral(photo_views.square(pixels, size))
        cut = []
        if min(pixels.shape[:2]) >= 2 * size:
            small = photo_views._shrink(pixels, 4 * size)
            trimmed = photo_views.trim_border(small)
            if trimmed.shape != small.shape:
                view = photo_views.square(trimmed, size)
                whole += [view, view[:, ::-1]]
            cut = [photo_views.square(part, size) for part in photo_views.windows(trimmed)]
        squares = np.ascontiguousarray(np.stack(whole + cut))
        vectors = embed(squares, np.ones(len(squares), int))
        kinds = np.array([photo_views.WHOLE] * len(whole) + [photo_views.WINDOW] * len(cut))
    turned = (kinds == photo_views.WHOLE) & (np.arange(len(kinds)) > 0)
    return vectors, turned


def calibration_library() -> tuple[CalibrationSet, list[str], list[np.ndarray]]:
    """The calibration split (never the evaluation photos): ``(split, names, decoded pixels)``
    of its indexed photos, originals then distractors."""
    data = search_calibration(photos())
    indexed = list(data.originals.items()) + list(data.distractors.items())
    return data, [n for n, _ in indexed], [photo_views.photo(b, MAX_PIXELS) for _, b in indexed]


def main(args: argparse.Namespace) -> dict:
    embed = Embedder(args.bundle)
    data, names, decoded = calibration_library()
    out = {}
    for policy in ("centre", "tiles"):
        bank = np.stack([stored(embed, p, policy) for p in decoded])
        for seed in args.seeds:
            rng = np.random.default_rng(seed)
            rows = []
            for positive, source in ((True, data.originals), (False, data.negatives)):
                for name, blob in source.items():
                    for family in FAMILIES:
                        pixels = photo_views.photo(edited(blob, family, rng), MAX_PIXELS)
                        vectors, turned = query(embed, pixels, policy)
                        best = (vectors @ bank.T - TURNED_PENALTY * turned[:, None]).max(0)
                        j = int(best.argmax())
                        rows.append((positive, family, positive and names[j] == name, best[j]))
            top1 = {f: float(np.mean([c for p, g, c, _ in rows if p and g == f])) for f in FAMILIES}
            ranked = sorted(rows, key=lambda r: -r[3])
            hits, ap = 0, 0.0
            for rank, row in enumerate(ranked, 1):
                if row[2]:
                    hits += 1
                    ap += hits / rank
            result = {
                "top1": round(float(np.mean([c for p, _, c, _ in rows if p])), 4),
                "micro_ap": round(ap / sum(r[0] for r in rows), 4),
                "below_1": {f: round(v, 3) for f, v in top1.items() if v < 1},
            }
            print(policy, f"seed {seed}", result, flush=True)
            out[f"{policy}_seed{seed}"] = result
    return {"calibration_split": out, "indexed": len(names)}


if __name__ == "__main__":
    emit(main(get_args_parser().parse_args()))
