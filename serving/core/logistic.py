"""Logistic regression by Newton's method, and the score threshold that reaches a precision: the
two steps of every calibrated decision here (``copy_scores.py``, ``pair_scores.py``)."""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weights ``(d,)`` of an L2-regularised logistic regression of ``y`` (0/1) on ``x`` ``(n, d)``,
    by Newton's method (the intercept column is not penalised)."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def wilson_lower(hits: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """The lower end of Wilson's score interval (Wilson 1927) for ``hits`` successes in ``n``
    trials, ``z`` standard deviations below (0: the plain proportion)."""
    hits, n = np.asarray(hits, dtype=np.float64), np.asarray(n, dtype=np.float64)
    p = hits / n
    if z == 0:
        return p
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def threshold_for_precision(
    scores: np.ndarray, correct: np.ndarray, precision: float, z: float = 0.0
) -> float:
    """The lowest score threshold at which the answers at or above it reach ``precision``
    (answers sorted best first; 1.0 when no threshold does). With ``z`` > 0 the precision must
    be reached by its Wilson lower bound, ``z`` standard deviations down: a threshold fitted on a
    few hundred answers then holds on new ones instead of sitting where the sample happened to
    touch the target."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(correct[order])
    reached = wilson_lower(hits, np.arange(1, len(order) + 1), z) >= precision
    if not reached.any():
        return 1.0
    last = int(np.nonzero(reached)[0].max())
    return float(scores[order][last])
