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


def threshold_for_precision(scores: np.ndarray, correct: np.ndarray, precision: float) -> float:
    """The lowest score threshold at which the answers at or above it reach ``precision``
    (answers sorted best first; 1.0 when no threshold does)."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(correct[order])
    reached = hits / np.arange(1, len(order) + 1) >= precision
    if not reached.any():
        return 1.0
    last = int(np.nonzero(reached)[0].max())
    return float(scores[order][last])
