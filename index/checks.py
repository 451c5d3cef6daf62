"""Argument checks shared by every collection call: ids, ``k``, vectors, uris and metadata.

Each failure is an :class:`index.errors.InvalidArgument` whose message names the limit and what
was given, so a caller (or the gRPC status it becomes) can fix the request without reading code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from simclr_search.index.errors import InvalidArgument

MAX_K = 10_000
MAX_ID_LENGTH = 512
MAX_URI_LENGTH = 4096
#: Metadata is returned with every hit: 64 KiB keeps a reply of the largest ``k`` under what
#: clients accept by default (gRPC's 4 MB) for typical sizes, and far from it for small ``k``.
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32
#: FAISS computes inner products and squared distances in float32: a vector whose squared norm
#: does not fit float32 would become inf/NaN (or zeros after normalising) inside the index.
MAX_VECTOR_NORM = float(np.sqrt(np.finfo(np.float32).max)) / 2


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
    norms = np.linalg.norm(array.astype(np.float64), axis=1, keepdims=True)
    if (norms > MAX_VECTOR_NORM).any():
        raise InvalidArgument(
            f"{what} have a length (norm) of {norms.max():.3g}, over the {MAX_VECTOR_NORM:.3g} "
            "that float32 distances can hold; scale them down"
        )
    if metric == "cosine":
        if (norms == 0).any():
            raise InvalidArgument(
                f"{what} contain an all-zero vector, which has no cosine similarity"
            )
        array = (array / norms).astype(np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def check_uri(uri: Any, external_id: str = "") -> None:
    """A string of at most ``MAX_URI_LENGTH`` characters (empty: none)."""
    if not isinstance(uri, str) or len(uri) > MAX_URI_LENGTH:
        size = len(uri) if isinstance(uri, str) else type(uri).__name__
        raise InvalidArgument(
            f"uri of id {external_id!r} must be a string of at most {MAX_URI_LENGTH} characters, "
            f"got {size}"
        )


def metadata_depth(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays (a scalar: 0), without recursion, so a hostile
    value cannot exhaust the stack; it stops counting past ``MAX_METADATA_DEPTH``."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_METADATA_DEPTH:
                break
            stack.extend(
                (child, depth) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def metadata_text(metadata: Any, external_id: str = "") -> str:
    """``metadata`` (a dict, or None for none) as standard JSON text, the form the store keeps.

    Refuses what SQLite's JSON functions (filters) or a client's parser could not read back:
    NaN and Infinity (not JSON), nesting deeper than ``MAX_METADATA_DEPTH``, and more than
    ``MAX_METADATA_BYTES`` of UTF-8.
    """
    where = f" of id {external_id!r}" if external_id else ""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise InvalidArgument(f"metadata{where} must be a JSON object")
    if metadata_depth(metadata) > MAX_METADATA_DEPTH:
        raise InvalidArgument(f"metadata{where} nests deeper than {MAX_METADATA_DEPTH} levels")
    try:
        text = json.dumps(metadata, allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        raise InvalidArgument(
            f"metadata{where} holds NaN or Infinity, which JSON does not allow ({exc}); "
            "use null or a string"
        ) from exc
    except TypeError as exc:
        raise InvalidArgument(f"metadata{where} is not JSON: {exc}") from exc
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"metadata{where} is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return text
