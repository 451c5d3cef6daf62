"""Duplicate groups of a collection: exact copies by content hash, near copies by the calibrated
pair decision, and which copy to keep.

1. Exact: items sharing a sha256 (``index.collection.Collection.same_content``).
2. Candidates: each item's :data:`NEIGHBOURS` nearest stored images scoring at least the lowest
   cosine from which the pair model can still say "copy" (``index.neighbours``: no all-pairs).
3. Evidence: pairs whose cosine decides alone pass at once; the rest are checked with the two
   images' stored local features (ORB + RANSAC inliers, ``local_features.py``) on ``threads``
   threads (OpenCV releases the GIL), a chunk of pairs at a time so memory stays bounded.
4. Decision: ``copy_scores.PairDecision`` (fitted by ``simclr calibrate-copies`` on the user's
   own photos) gives each pair a probability; pairs at or over its threshold are joined with
   union-find, so a copy of a copy lands in its original's group.
5. Keeper: the largest picture, then the most bytes, then the one with EXIF (the stored
   ``signature.PhotoFacts``), then the first id; the group says why.

Nothing here deletes anything: callers decide what to do with the groups.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from simclr_search.index.collection import Collection
from simclr_search.index.neighbours import Pairs, UnionFind, neighbour_pairs
from simclr_search.serving.core import local_features
from simclr_search.serving.core.errors import MissingModel
from simclr_search.serving.core.pair_scores import PairDecision
from simclr_search.serving.core.request_images import thread_features
from simclr_search.serving.core.signature import PhotoFacts, parse

#: Nearest stored images each item is compared with by embedding.
NEIGHBOURS = 16
#: Of those, the nearest this many are also checked with local features (the check costs most).
VERIFY_NEIGHBOURS = 8
#: Candidate pairs verified per chunk (bounds the local features held at once).
CHUNK = 8192
#: Neighbours below this cosine are not candidates (the local features still find rotations and
#: crops above it; below it two pictures have nothing in common the embedding can see).
FLOOR = 0.05


@dataclass(frozen=True)
class Member:
    """One item of a group, with the facts the keeper is chosen by (None: stored without)."""

    id: str
    uri: str
    content_hash: str
    facts: PhotoFacts | None
    internal: int = -1


@dataclass(frozen=True)
class DuplicateGroup:
    """``keep`` and its ``copies``; ``scores[i]`` is the probability that joined ``copies[i]``
    (1.0 for a byte-identical copy); ``reason`` says why ``keep`` was chosen; ``keep_score`` is the
    best probability that joined the keeper (for callers that re-choose among the members)."""

    keep: Member
    copies: list[Member]
    scores: list[float]
    exact: list[bool]
    reason: str
    keep_score: float = 1.0


@dataclass(frozen=True)
class PairEvidence:
    """Candidate pairs (internal ids) with their cosine, inliers (-1: not verified) and the
    inliers' spread (``LocalFeatures.match``), each ``(n,)``."""

    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    inliers: np.ndarray
    spread: np.ndarray


def _matches_of(
    pairs: list[tuple[int, int]], features: dict[int, tuple | None]
) -> list[tuple[int, float]]:
    extractor = thread_features()
    out = []
    for a, b in pairs:
        fa, fb = features.get(a), features.get(b)
        out.append(extractor.match(fa, fb) if fa is not None and fb is not None else (0, 0.0))
    return out


def measure_pairs(
    collection: Collection,
    floor: float,
    neighbours: int = NEIGHBOURS,
    skip: Callable[[np.ndarray], np.ndarray] | None = None,
    threads: int = 2,
    progress: Callable[[str, int], None] | None = None,
    verify_neighbours: int = VERIFY_NEIGHBOURS,
) -> PairEvidence:
    """The candidate pairs at cosine >= ``floor`` and their inliers; only pairs where one is among
    the other's ``verify_neighbours`` nearest, and ``skip(cosine)`` is false, are verified (the
    rest: inliers -1). ``progress(stage, n)`` counts items, then pairs."""
    found: Pairs = neighbour_pairs(
        collection,
        neighbours,
        floor,
        progress=None if progress is None else (lambda n: progress("neighbours", n)),
    )
    inliers = np.full(len(found), -1, np.int64)
    spread = np.zeros(len(found), np.float64)
    todo = found.rank < verify_neighbours
    if skip is not None:
        todo &= ~skip(found.score)
    if not local_features.available():
        todo[:] = False
    index = np.nonzero(todo)[0]
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="dedup-verify") as pool:
        for start in range(0, len(index), CHUNK):
            chunk = index[start : start + CHUNK]
            ids = np.unique(np.concatenate([found.a[chunk], found.b[chunk]]))
            items = collection.items_by_internal(ids.tolist())
            features = {i: parse(item.signature).features for i, item in items.items()}
            pairs = list(zip(found.a[chunk].tolist(), found.b[chunk].tolist(), strict=True))
            step = -(-len(pairs) // max(1, threads))
            parts = pool.map(
                _matches_of,
                [pairs[i : i + step] for i in range(0, len(pairs), step)],
                [features] * len(range(0, len(pairs), step)),
            )
            matched = [m for part in parts for m in part]
            inliers[chunk] = [n for n, _ in matched]
            spread[chunk] = [c for _, c in matched]
            if progress is not None:
                progress("verify", len(chunk))
    return PairEvidence(found.a, found.b, found.score, inliers, spread)


def choose_keeper(members: list[Member]) -> tuple[Member, str]:
    """The member to keep and why: the most pixels, then bytes, then EXIF, then the first id."""

    def key(m: Member):
        f = m.facts
        return (f.pixels if f else -1, f.bytes if f else -1, bool(f and f.exif))

    ranked = sorted(members, key=lambda m: (tuple(-x for x in key(m)), m.id))
    keep, second = ranked[0], ranked[1] if len(ranked) > 1 else ranked[0]
    kf, sf = keep.facts, second.facts
    if kf is None:
        return keep, "no image facts stored for these items: the first id"
    if sf is None or kf.pixels != sf.pixels:
        return keep, f"largest picture ({kf.width}x{kf.height})"
    if kf.bytes != sf.bytes:
        return keep, f"same pixel count, most bytes ({kf.bytes})"
    if kf.exif != sf.exif:
        return keep, "same pixel count and bytes, keeps its EXIF"
    return keep, "identical size, bytes and EXIF: the first id"


class DuplicateFinder:
    """Finds the duplicate groups of a collection.

    Args:
        decision: the bundle's pair model; None finds exact copies only (``near=False``), and
            asking for near copies without one raises :class:`MissingModel`.
        neighbours: nearest stored images compared per item.
        threads: verification threads.
    """

    def __init__(
        self, decision: PairDecision | None, neighbours: int = NEIGHBOURS, threads: int = 2
    ) -> None:
        if neighbours < 1:
            raise ValueError(f"neighbours must be at least 1, got {neighbours}")
        self.decision = decision
        self.neighbours = neighbours
        self.threads = threads

    def find(
        self,
        collection: Collection,
        near: bool = True,
        progress: Callable[[str, int], None] | None = None,
    ) -> list[DuplicateGroup]:
        """Every group of two or more copies, largest group first."""
        joined = UnionFind()
        score: dict[int, float] = {}
        for ids in collection.same_content():
            for other in ids[1:]:
                joined.union(ids[0], other)
            for i in ids:
                score[i] = 1.0
        if near:
            if self.decision is None:
                raise MissingModel(
                    "the bundle's copy_calibration.json has no pair model for near duplicates; "
                    "run simclr calibrate-copies on your photos (or ask for exact copies only)"
                )
            evidence = measure_pairs(
                collection,
                FLOOR,
                self.neighbours,
                self.decision.decides_alone,
                self.threads,
                progress,
            )
            probability = self.decision.probability(
                evidence.cosine, np.maximum(evidence.inliers, 0), evidence.spread
            )
            for a, b, p in zip(evidence.a, evidence.b, probability, strict=True):
                if p >= self.decision.threshold:
                    joined.union(int(a), int(b))
                    for i in (int(a), int(b)):
                        score[i] = max(score.get(i, 0.0), float(p))
        return self._groups(collection, joined.groups(), score)

    def _groups(
        self, collection: Collection, groups: list[list[int]], score: dict[int, float]
    ) -> list[DuplicateGroup]:
        out = []
        for start in range(0, len(groups), 1024):
            part = groups[start : start + 1024]
            items = collection.items_by_internal([i for g in part for i in g])
            for group in part:
                members = [
                    Member(it.external_id, it.uri, it.content_hash, parse(it.signature).facts, i)
                    for i in group
                    if (it := items.get(i)) is not None
                ]
                if len(members) < 2:  # deleted meanwhile
                    continue
                keep, reason = choose_keeper(members)
                copies = [m for m in members if m is not keep]
                exact = [m.content_hash == keep.content_hash for m in copies]
                scores = [
                    1.0 if e else score.get(m.internal, 0.0)
                    for m, e in zip(copies, exact, strict=True)
                ]
                keep_score = score.get(keep.internal, 0.0)
                out.append(DuplicateGroup(keep, copies, scores, exact, reason, keep_score))
        out.sort(key=lambda g: (-len(g.copies), g.keep.id))
        return out
