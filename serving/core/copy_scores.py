"""Is this hit a copy of the query? A calibrated probability, and the threshold for a precision.

Each candidate of a search by image has three measurements: its best cosine over the query's
whole-picture views, its best over the window views (``photo_views.py``), and the local-feature
inliers (``local_features.py``). A logistic model over them (Cox 1958; fitted by Newton's method)
turns them into the probability that the candidate is the query's original, and ``is_copy`` is
that probability at or over the threshold that gave ``target_precision`` on the calibration split.
Both are fitted by ``simclr calibrate-copies`` on edited copies of images that are never used to
evaluate (``serving/jobs/calibrate.py``) and stored beside the bundle's models in
:data:`FILENAME`, with the precision they were fitted for and what they were fitted on; callers no
longer pick a cosine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simclr_search.files import atomic_write
from simclr_search.serving.core.logistic import fit_logistic, threshold_for_precision
from simclr_search.serving.core.pair_scores import PairDecision

FILENAME = "copy_calibration.json"
FORMAT_VERSION = 1
#: Inliers enter as log(1 + min(inliers, cap)): beyond a few dozen, more says nothing new.
INLIER_CAP = 60
#: The threshold is where the calibration answers' precision reaches the target by its one-sided
#: 95% Wilson lower bound (``logistic.threshold_for_precision``).
CONFIDENCE_Z = 1.645


def features(whole: np.ndarray, window: np.ndarray, inliers: np.ndarray) -> np.ndarray:
    """``(n,)`` x 3 -> the model's ``(n, 4)`` design matrix (with the intercept column)."""
    whole = np.asarray(whole, dtype=np.float64)
    return np.stack(
        [
            np.ones_like(whole),
            whole,
            np.asarray(window, dtype=np.float64),
            np.log1p(np.minimum(np.asarray(inliers, dtype=np.float64), INLIER_CAP)),
        ],
        axis=1,
    )


@dataclass(frozen=True)
class CopyCalibration:
    """The fitted model. ``weights``: intercept, whole-view cosine, window cosine, log inliers.
    ``pairs``: the duplicate finder's own model of stored pairs, where one was fitted."""

    weights: tuple[float, ...]
    threshold: float
    target_precision: float
    fitted_on: dict[str, Any] = field(default_factory=dict)
    pairs: PairDecision | None = None

    def probability(self, whole, window, inliers) -> np.ndarray:
        """``(n,)`` probabilities that each candidate is a copy."""
        z = features(whole, window, inliers) @ np.asarray(self.weights, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def save(self, folder: Path) -> Path:
        path = Path(folder) / FILENAME
        data = {"format_version": FORMAT_VERSION, **asdict(self)}
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())
        return path

    @classmethod
    def load(cls, folder: Path) -> CopyCalibration | None:
        """The calibration stored in ``folder``, or None if there is none."""
        path = Path(folder) / FILENAME
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {data.get('format_version')} is not 1")
        weights = tuple(float(w) for w in data["weights"])
        if len(weights) != 4:
            raise ValueError(f"{path}: expected 4 weights, got {len(weights)}")
        pairs = data.get("pairs")
        if pairs is not None:
            pair_weights = tuple(float(w) for w in pairs["weights"])
            if len(pair_weights) != 5:
                raise ValueError(f"{path}: expected 5 pair weights, got {len(pair_weights)}")
            pairs = PairDecision(
                pair_weights,
                float(pairs["threshold"]),
                float(pairs["target_precision"]),
                pairs.get("fitted_on", {}),
            )
        return cls(
            weights,
            float(data["threshold"]),
            float(data["target_precision"]),
            data["fitted_on"],
            pairs,
        )


def calibrate(
    whole: np.ndarray,
    window: np.ndarray,
    inliers: np.ndarray,
    correct: np.ndarray,
    target_precision: float,
    fitted_on: dict[str, Any],
) -> CopyCalibration:
    """Fit on each calibration query's best candidate: ``correct`` is 1 where it is the query's
    original, 0 where it is not (or the query has none in the index)."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.min() == correct.max():
        raise ValueError("calibration needs both copies and non-copies among the answers")
    weights = fit_logistic(features(whole, window, inliers), correct)
    model = CopyCalibration(tuple(float(w) for w in weights), 1.0, target_precision, fitted_on)
    scores = model.probability(whole, window, inliers)
    threshold = threshold_for_precision(scores, correct, target_precision, CONFIDENCE_Z)
    fitted_on = {**fitted_on, "precision_bound": "one-sided 95% Wilson lower bound"}
    return CopyCalibration(model.weights, threshold, target_precision, fitted_on)
