"""Are two *stored* images copies of each other? The duplicate finder's calibrated decision.

A search by image has the query's views (``copy_scores.py``); two stored images have only their
stored embeddings and local features. Two kinds of evidence, each calibrated on its own:

* the embedding: ``p_embedding = sigmoid(a0 + a1 * cosine)``, which knows blurred, recoloured,
  re-encoded and resized copies, but not a rotated or strongly cropped one;
* the local features: ``p_local = sigmoid(b0 + b1 * log(1 + inliers) + b2 * spread)`` (the inliers
  of one similarity transform and how much of a picture they cover, ``LocalFeatures.match``),
  which knows rotations, crops and insets, but nothing of a tiny or featureless picture.

A pair is as likely a copy as its stronger evidence says (``max``: either alone is enough), and it
is a copy at or over the threshold that reached the target precision on the calibration pairs
(``simclr calibrate-copies``; Cox 1958 for the fits, by Newton's method in ``logistic.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simclr_search.serving.core.logistic import fit_logistic, sigmoid, threshold_for_precision

#: Inliers enter as log(1 + min(inliers, cap)): beyond a few dozen, more says nothing new.
INLIER_CAP = 60


def _local_features(inliers: np.ndarray, spread: np.ndarray) -> np.ndarray:
    capped = np.minimum(np.asarray(inliers, dtype=np.float64), INLIER_CAP)
    spread = np.clip(np.asarray(spread, dtype=np.float64), 0.0, 1.0)
    return np.stack([np.ones_like(capped), np.log1p(capped), spread], axis=1)


def _embedding_features(cosine: np.ndarray) -> np.ndarray:
    cosine = np.asarray(cosine, dtype=np.float64)
    return np.stack([np.ones_like(cosine), cosine], axis=1)


@dataclass(frozen=True)
class PairDecision:
    """``weights``: a0, a1 (embedding), b0, b1, b2 (local features); ``threshold`` on the max."""

    weights: tuple[float, ...]
    threshold: float
    target_precision: float
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def embedding_probability(self, cosine) -> np.ndarray:
        return sigmoid(_embedding_features(cosine) @ np.asarray(self.weights[:2]))

    def local_probability(self, inliers, spread) -> np.ndarray:
        return sigmoid(_local_features(inliers, spread) @ np.asarray(self.weights[2:]))

    def probability(self, cosine, inliers, spread) -> np.ndarray:
        """``(n,)`` probabilities that each pair is a copy."""
        return np.maximum(
            self.embedding_probability(cosine), self.local_probability(inliers, spread)
        )

    def decides_alone(self, cosine: np.ndarray) -> np.ndarray:
        """Pairs the embedding alone calls copies (no need to verify them)."""
        return self.embedding_probability(cosine) >= self.threshold


def fit_pairs(
    cosine: np.ndarray,
    inliers: np.ndarray,
    spread: np.ndarray,
    correct: np.ndarray,
    target_precision: float,
    fitted_on: dict[str, Any],
) -> PairDecision:
    """Fit on candidate pairs: ``correct`` is 1 where both images are copies of one photo;
    ``inliers`` -1 marks a pair that was not verified, left out of the local model's fit."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.min() == correct.max():
        raise ValueError("pair calibration needs both copy and non-copy pairs")
    inliers = np.asarray(inliers)
    verified = inliers >= 0
    if correct[verified].min(initial=1) == correct[verified].max(initial=0):
        raise ValueError("pair calibration needs verified copy and non-copy pairs")
    a = fit_logistic(_embedding_features(cosine), correct)
    b = fit_logistic(
        _local_features(inliers[verified], np.asarray(spread)[verified]), correct[verified]
    )
    inliers = np.maximum(inliers, 0)
    weights = tuple(float(w) for w in (*a, *b))
    scores = PairDecision(weights, 1.0, target_precision).probability(cosine, inliers, spread)
    threshold = threshold_for_precision(scores, correct, target_precision)
    return PairDecision(weights, threshold, target_precision, fitted_on)
