"""The write requests of the core, as domain types: Upsert's items, IndexImages' outcomes, the
metadata a client sends as JSON text (checked against the index's limits before anything is
stored), and the cut of an IndexImages batch into runs without a repeated id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from simclr_search.index.checks import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, metadata_text
from simclr_search.index.errors import InvalidArgument
from simclr_search.serving.core.errors import BadRequest


@dataclass(frozen=True)
class UpsertInput:
    id: str
    image: bytes | None = None
    embedding: np.ndarray | None = None
    uri: str = ""
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class IndexOutcome:
    id: str
    status: str  # "indexed" | "duplicate" | "failed"
    error: str = ""
    content_hash: str = ""  # sha256 of the image's bytes (what resumes and exact dedup go by)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON (use null or a string)")


def parse_metadata(text: str, item_id: str = "") -> dict[str, Any]:
    """``metadata_json`` -> a dict the store accepts, or :class:`BadRequest` saying why not:
    not JSON, NaN/Infinity (Python's parser takes them; SQLite and other clients do not), not an
    object, too large or nested too deep (``index.checks`` limits)."""
    if not text:
        return {}
    where = f" of id {item_id!r}" if item_id else ""
    if len(text) > MAX_METADATA_BYTES:  # characters >= bytes / 4: a cheap bound before parsing
        size = len(text.encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise BadRequest(
                f"metadata_json{where} is {size} bytes; the limit is {MAX_METADATA_BYTES}"
            )
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError as exc:
        raise BadRequest(
            f"metadata_json{where} nests deeper than {MAX_METADATA_DEPTH} levels"
        ) from exc
    except ValueError as exc:
        raise BadRequest(f"metadata_json{where} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"metadata_json{where} must be a JSON object")
    try:
        metadata_text(value, item_id)
    except InvalidArgument as exc:
        raise BadRequest(str(exc).replace("metadata", "metadata_json", 1)) from exc
    return value


def runs_without_repeats(batch: list[tuple[str, bytes, str, str]]):
    """``batch`` cut, in order, into runs in which no (non-empty) id appears twice."""
    run: list[tuple[str, bytes, str, str]] = []
    ids: set[str] = set()
    for entry in batch:
        if entry[0] and entry[0] in ids:
            yield run
            run, ids = [], set()
        run.append(entry)
        if entry[0]:
            ids.add(entry[0])
    if run:
        yield run
