"""Search by image as copy detection: the query's views, the index, verification, a calibrated answer.

1. The query photo is decoded once (``request_images.Photo``) and cut into views
   (``photo_views.query_views``: orientations, border-trimmed, windows), embedded in one batch
   (a whole view's tiles pooled into one vector, as stored images are).
2. Each view's nearest stored images are fetched. The :data:`POOL` best of them by any view get
   their exact best whole-picture and best window cosine over *all* the views from their stored
   vectors: an image only a window found still has a real whole-picture cosine, not a gap.
   The query's strongest ORB descriptors also vote (``index.code_votes``): the
   :data:`local_features.VOTED` stored photos that share most of them join the candidates, so a
   copy the embedding ranks far down (a photo under heavy stripes) is still checked.
3. The :data:`VERIFIED` best candidates that have stored local features, and the voted ones, are
   checked with them
   (``local_features``): the query's ORB points, and its mirror image's, against the candidate's;
   without a strong match among them, up to :data:`REACH` (see :func:`_verify`). Candidates
   without features (icons, thumbnails) take no verification slot.
4. ``copy_scores.CopyCalibration`` turns the three into a probability; hits are ordered by it and
   say ``is_copy``. Without a calibration file the order is by cosine and no hit claims a copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from simclr_search.bundle.preprocess import pool_tiles
from simclr_search.index.errors import NotFound
from simclr_search.index.hits import Hit
from simclr_search.serving.core import local_features
from simclr_search.serving.core.copy_scores import CopyCalibration
from simclr_search.serving.core.photo_views import ALL_VIEWS, WINDOW, ViewSet, query_views
from simclr_search.serving.core.request_images import Photo, RequestImages, thread_features
from simclr_search.serving.core.signature import features_of
from simclr_search.serving.core.tie_break import (
    DEFAULT_MARGIN,
    near_tie_order,
    signatures,
)

#: Stored images fetched per query view.
PER_VIEW = 10
#: Candidates (best by any view) whose cosines are computed exactly from their stored vectors.
POOL = 64
#: Candidates with stored local features always checked with them.
VERIFIED = 12
#: Inliers that make a verified copy: with one among the first VERIFIED, checking stops there.
STRONG = 20
#: How far checking goes when no candidate is verified strongly.
REACH = 48
#: Fewer inliers than this and the query's mirror image is matched too.
MIRROR_BELOW = 12
#: Threads one query's candidates are matched on (shared by all queries of the process).
MATCH_THREADS = 2
_MATCHERS = ThreadPoolExecutor(MATCH_THREADS, thread_name_prefix="simclr-verify")
#: Whole views other than the stored one (turned, mirrored, trimmed) count this much less: an
#: upright copy is the common case, and among thousands of icons a turned view of the query
#: otherwise finds a stranger that happens to look like it (chosen on CIFAR-10 train images).
TURNED_PENALTY = 0.04
#: Probabilities this close to the best count as a tie (ordered by the thumbnail tie-break).
PROBABILITY_TIE = 0.02


@dataclass(frozen=True)
class CopyHit:
    """A hit of a search by image: the index's hit (``score``: the best cosine over the views)
    with the calibrated copy decision (``copy_probability`` -1: no calibration)."""

    hit: Hit
    whole: float
    window: float
    inliers: int
    copy_probability: float
    is_copy: bool


def _pool(per_view: list[list[Hit]], size: int) -> list[Hit]:
    """The ``size`` stored images with the best cosine under any view (each image once)."""
    best: dict[str, Hit] = {}
    for hits in per_view:
        for hit in hits:
            if hit.external_id not in best or hit.score > best[hit.external_id].score:
                best[hit.external_id] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:size]


def exact_cosines(
    views: np.ndarray,
    kinds: np.ndarray,
    mirrored: np.ndarray,
    stored: np.ndarray,
    turned_penalty: float = TURNED_PENALTY,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each stored vector's best whole-view and best window cosine over the query's views.

    Args:
        views: ``(V, D)`` the query views' embeddings, the first the stored images' own view;
            kinds: ``(V,)`` WHOLE or WINDOW; mirrored: ``(V,)`` whether each view is mirrored.
        stored: ``(C, D)`` the candidates' stored vectors.
        turned_penalty: subtracted from every whole view's cosine but the first's.

    Returns:
        ``(C,)`` whole and ``(C,)`` window cosines (window = whole when there are no windows),
        and ``(C,)`` whether the best whole view is a mirrored one.
    """
    unit = views / np.maximum(np.linalg.norm(views, axis=1, keepdims=True), 1e-12)
    stored = stored / np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
    cosine = stored @ unit.T  # (C, V)
    is_whole = kinds != WINDOW
    whole_cosine = cosine[:, is_whole]
    whole_cosine[:, 1:] -= turned_penalty
    whole = whole_cosine.max(axis=1)
    window = cosine[:, ~is_whole].max(axis=1) if (~is_whole).any() else whole
    return whole, window, np.asarray(mirrored)[is_whole][whole_cosine.argmax(axis=1)]


def stored_vectors(collection: Any, ids: list[str]) -> dict[str, np.ndarray]:
    """id -> stored vector for those of ``ids`` still stored (one may be deleted between the
    search and this lookup); ``collection`` is a plain or sharded collection."""
    try:
        items = collection.get(ids)
    except NotFound:
        gone = set(collection.missing(ids))
        items = collection.get([i for i in ids if i not in gone]) if len(gone) < len(ids) else []
    return {item.external_id: item.vector for item in items}


def _verifiable(hit: Hit) -> tuple[np.ndarray, np.ndarray] | None:
    """The hit's stored local features, if it has enough to match (an icon has none)."""
    features = features_of(hit.signature)
    if features is None or len(features[1]) < local_features.MIN_MATCHES:
        return None
    return features


def _match_all(
    extractor: local_features.LocalFeatures,
    query: tuple[np.ndarray, np.ndarray],
    jobs: list[tuple[int, tuple[np.ndarray, np.ndarray]]],
) -> list[tuple[int, int]]:
    """``(position, inliers)`` of ``query`` against each job's stored features, split over the
    :data:`MATCH_THREADS` verification threads (matching releases the GIL: a lone query's
    verification then takes the machine's cores instead of one)."""

    def part(share: list[tuple[int, tuple[np.ndarray, np.ndarray]]]) -> list[tuple[int, int]]:
        return [(i, extractor.inliers(query, f)) for i, f in share]

    if len(jobs) < 2 * MATCH_THREADS:  # not worth a hand-off
        return part(jobs)
    futures = [_MATCHERS.submit(part, jobs[k::MATCH_THREADS]) for k in range(MATCH_THREADS)]
    return [pair for future in futures for pair in future.result()]


def query_features(query: Photo) -> tuple[np.ndarray, np.ndarray]:
    """The query's upright ORB points and descriptors, strongest first (a decode thread)."""
    return thread_features().extract(query.pixels, features=local_features.QUERY_FEATURES)


def _verify(
    query: Photo,
    candidates: list[Hit],
    mirrored: list[bool] | None = None,
    reach: int = REACH,
    upright: tuple[np.ndarray, np.ndarray] | None = None,
    voted: frozenset[int] = frozenset(),
) -> list[int]:
    """Inliers per candidate, in the candidates' order (best cosine first); runs in a decode
    thread. Candidates without local features get 0 and take no slot. ``upright``: the query's
    features when already extracted (:func:`query_features`).

    The first :data:`VERIFIED`, and the candidates at the positions ``voted`` (found by the
    query's local features), are always checked, upright and, below :data:`MIRROR_BELOW`
    inliers, mirrored. When none of them has :data:`STRONG` inliers (a strong crop or a small
    inset, which the embedding ranks low), checking goes on to ``reach`` candidates, each in the
    one orientation its best whole view had (``mirrored``; upright when not given), which keeps a
    query that has no copy in the index within the latency budget.
    """
    counts = [0] * len(candidates)
    usable = [(i, f) for i, h in enumerate(candidates) if (f := _verifiable(h)) is not None]
    if not usable:
        return counts
    extractor = thread_features()
    sides: dict[bool, tuple[np.ndarray, np.ndarray]] = {} if upright is None else {False: upright}

    def side(mirror: bool) -> tuple[np.ndarray, np.ndarray]:
        if mirror not in sides:
            sides[mirror] = extractor.extract(
                query.pixels, mirror=mirror, features=local_features.QUERY_FEATURES
            )
        return sides[mirror]

    first = usable[:VERIFIED] + [(i, f) for i, f in usable[VERIFIED:] if i in voted]
    deep = [(i, f) for i, f in usable[VERIFIED : max(reach, VERIFIED)] if i not in voted]
    for i, count in _match_all(extractor, side(False), first):
        counts[i] = count
    weak = [(i, f) for i, f in first if counts[i] < MIRROR_BELOW]
    if weak:  # a mirrored copy matches its original's mirror image
        for i, count in _match_all(extractor, side(True), weak):
            counts[i] = max(counts[i], count)
    if deep and max(counts) < STRONG:
        for flip in (False, True):
            group = [(i, f) for i, f in deep if bool(mirrored and mirrored[i]) == flip]
            if not group:  # no need for that side's keypoints
                continue
            for i, count in _match_all(extractor, side(flip), group):
                counts[i] = count
    return counts


class CopySearch:
    """Search by image with copy decisions.

    Args:
        requests: the request decoder (its threads also run the views and the verification).
        embed: ``(n, S, S, 3)`` uint8 -> ``(n, D)`` embeddings (the micro-batcher).
        calibration: the bundle's fitted copy model, or None (order by cosine, no decisions).
        tie_break_margin: cosine margin of the thumbnail tie-break among tied probabilities.
        views / verify / reach / voted: which query views, whether to check local features, how
            many candidates at most, and how many found by the local features' votes (all, yes,
            :data:`REACH` and :data:`local_features.VOTED` in the server; the benchmark's
            ablation measures each part).
    """

    def __init__(
        self,
        requests: RequestImages,
        embed: Callable[[np.ndarray], Awaitable[np.ndarray]],
        calibration: CopyCalibration | None,
        tie_break_margin: float = DEFAULT_MARGIN,
        views: ViewSet = ALL_VIEWS,
        verify: bool = True,
        reach: int = REACH,
        voted: int = local_features.VOTED,
    ) -> None:
        self.requests = requests
        self.tie_break_margin = tie_break_margin
        self.views = views
        self.embed = embed
        self.calibration = calibration
        self.verify = verify and local_features.available()
        self.reach = reach
        self.voted = voted

    async def search(
        self,
        image: bytes,
        k: int,
        search: Callable[[np.ndarray, int], Awaitable[list[list[Hit]]]],
        vectors: Callable[[list[str]], Awaitable[dict[str, np.ndarray]]],
        vote: Callable[[np.ndarray, int], Awaitable[list[Hit]]] | None = None,
    ) -> list[CopyHit]:
        """The ``k`` best stored images for ``image``; ``search(vectors, k)`` queries the
        collection (with the caller's filter) for each row; ``vectors(ids)`` gives the stored
        vectors of those ids that are still stored; ``vote(codes, n)`` the ``n`` stored images
        the query's descriptors vote for (the collection's ``vote``; None: no voting)."""
        result = (await self.requests.decode_photos([image], with_features=False))[0]
        if isinstance(result, Exception):
            raise result
        # The query's local features and their votes run beside the views and their embedding.
        voting = vote is not None and self.verify and self.voted > 0
        local = asyncio.ensure_future(self._votes(result, vote)) if voting else None
        try:
            views = await self.requests.run(
                query_views, result.pixels, self.requests.size, self.views
            )
            squares = np.asarray(await self.embed(views.squares), dtype=np.float32)
        except BaseException:
            if local is not None:
                local.cancel()
            raise
        embedded = pool_tiles(squares, views.counts)  # (V, D), one row per view
        kinds, mirrored = views.kinds, views.mirrored
        pool = _pool(await search(embedded, max(PER_VIEW, k)), max(POOL, k))
        upright, voted_hits = (None, []) if local is None else await local
        seen = {h.external_id for h in pool}
        pool += [h for h in voted_hits if h.external_id not in seen]
        voted_ids = {h.external_id for h in voted_hits}
        stored = await vectors([h.external_id for h in pool])
        pool = [h for h in pool if h.external_id in stored]  # deleted meanwhile: left out
        if not pool:
            return []
        whole, window, flipped = exact_cosines(
            embedded, kinds, mirrored, np.stack([stored[h.external_id] for h in pool])
        )
        order = np.argsort(-np.maximum(whole, window), kind="stable")
        pool, whole, window = [pool[i] for i in order], whole[order], window[order]
        flipped = flipped[order].tolist()
        inliers = np.zeros(len(pool), dtype=np.int64)
        if self.verify:
            voted = frozenset(i for i, h in enumerate(pool) if h.external_id in voted_ids)
            inliers[:] = await self.requests.run(
                _verify, result, pool, flipped, self.reach, upright, voted
            )
        if self.calibration is not None:
            probability = self.calibration.probability(whole, window, inliers)
            threshold = self.calibration.threshold
        else:
            probability, threshold = np.full(len(pool), -1.0), np.inf
        hits = [
            CopyHit(
                dataclasses.replace(hit, score=float(max(w, v))),
                float(w),
                float(v),
                int(n),
                float(p),
                bool(p >= threshold),
            )
            for hit, w, v, n, p in zip(pool, whole, window, inliers, probability, strict=True)
        ]
        hits.sort(key=lambda h: (-h.copy_probability, -h.hit.score))
        return self._near_ties(hits, signatures(views.thumbnail_square)[0])[:k]

    async def _votes(
        self, query: Photo, vote: Callable[[np.ndarray, int], Awaitable[list[Hit]]]
    ) -> tuple[tuple[np.ndarray, np.ndarray], list[Hit]]:
        """The query's upright features, and the stored images its strongest descriptors vote
        for (vote counts as the hits' scores, replaced by cosines later)."""
        upright = await self.requests.run(query_features, query)
        codes = upright[1][: local_features.VOTE_QUERY]
        if len(codes) < local_features.MIN_MATCHES:
            return upright, []
        return upright, await vote(codes, self.voted)

    def _near_ties(self, hits: list[CopyHit], thumbnail: bytes) -> list[CopyHit]:
        """Hits whose probabilities tie with the best (within :data:`PROBABILITY_TIE`; all of them
        without a calibration) in the thumbnail tie-break's order (``tie_break.py``): what tells
        a blurred copy from a near-duplicate photo when nothing else does. When the best hit has
        no local-feature inliers, every hit without any joins the tie."""
        if len(hits) < 2 or self.tie_break_margin <= 0:
            return hits
        top = hits[0]
        # Without local evidence for the best hit (an icon, say), the hits without any are told
        # apart by what is left: cosine and thumbnail.
        blind = top.inliers == 0
        tied = [
            h.copy_probability >= top.copy_probability - PROBABILITY_TIE
            or (blind and h.inliers == 0)
            for h in hits
        ]
        group = sorted(
            (h for h, t in zip(hits, tied, strict=True) if t), key=lambda h: -h.hit.score
        )
        rest = [h for h, t in zip(hits, tied, strict=True) if not t]
        order = near_tie_order(
            np.array([h.hit.score for h in group]),
            thumbnail,
            [h.hit.signature for h in group],
            self.tie_break_margin,
        )
        return [group[i] for i in order] + rest
