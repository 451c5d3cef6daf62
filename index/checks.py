"""Argument checks shared by every collection call: ids, ``k`` and vectors.

Each failure is an :class:`index.errors.InvalidArgument` whose message names the limit and what
was given, so a caller (or the gRPC status it becomes) can fix the request without reading code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simclr_search.index.errors import InvalidArgument

MAX_K = 10_000
MAX_ID_LENGTH = 512


def check_k(k: int) -> None:
    """``k`` must be a plain integer in ``1..MAX_K`` (``True`` is not a count)."""
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0 or k > MAX_K:
        raise InvalidArgument(f"k must be an integer in 1..{MAX_K}, got {k!r}")


def check_ids(ids: Sequence[str]) -> None:
    """Non-empty strings of at most ``MAX_ID_LENGTH`` characters, none twice in one request."""
    seen: set[str] = set()
    for external_id in ids:
        if not isinstance(external_id, str) or not external_id or len(external_id) > MAX_ID_LENGTH:
            raise InvalidArgument(
                f"ids must be non-empty strings of at most {MAX_ID_LENGTH} characters"
            )
        if external_id in seen:
            raise InvalidArgument(f"id {external_id!r} appears twice in one request")
        seen.add(external_id)


def as_vectors(
    vectors: Any, dim: int, metric: str, collection: str, what: str = "vectors"
) -> np.ndarray:
    """``vectors`` (one ``(dim,)`` or ``(n, dim)``) -> contiguous float32 ``(n, dim)``, unit length
    for the cosine metric. Rejects other dimensions, NaN / infinity, and all-zero vectors under
    cosine (no direction to compare)."""
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be numbers: {exc}") from exc
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidArgument(
            f"{what} must have dimension {dim} (collection {collection!r}), got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise InvalidArgument(f"{what} contain NaN or infinite values")
    if metric == "cosine":
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InvalidArgument(
                f"{what} contain an all-zero vector, which has no cosine similarity"
            )
        array = array / norms
    return np.ascontiguousarray(array, dtype=np.float32)
