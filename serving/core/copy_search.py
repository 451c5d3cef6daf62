"""Search by image as copy detection: the query's views, the index, verification, a calibrated answer.

1. The query photo is decoded once (``request_images.Photo``) and cut into views
   (``photo_views.query_views``: orientations, border-trimmed, windows), embedded in one batch.
2. Each view's nearest stored images are fetched; each image keeps its best whole-picture and its
   best window cosine.
3. The :data:`VERIFIED` best candidates are checked with local features (``local_features``): the
   query's ORB points, and its mirror image's, against the candidate's stored ones.
4. ``copy_scores.CopyCalibration`` turns the three into a probability; hits are ordered by it and
   say ``is_copy``. Without a calibration file the order is by cosine and no hit claims a copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

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
#: Candidates checked with local features.
VERIFIED = 12
#: Fewer inliers than this and the query's mirror image is matched too.
MIRROR_BELOW = 12
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


def _best_per_item(per_view: list[list[Hit]], kinds: np.ndarray) -> dict[str, list[Any]]:
    """id -> [hit, best whole-view cosine, best window cosine] over every view's hits."""
    best: dict[str, list[Any]] = {}
    for hits, kind in zip(per_view, kinds, strict=True):
        slot = 2 if kind == WINDOW else 1
        for hit in hits:
            entry = best.setdefault(hit.external_id, [hit, -1.0, -1.0])
            entry[slot] = max(entry[slot], hit.score)
    return best


def _verify(query: Photo, candidates: list[Hit]) -> list[int]:
    """Inliers per candidate (0 where either side has no features); runs in a decode thread."""
    stored = [features_of(h.signature) for h in candidates]
    if not any(s is not None for s in stored):
        return [0] * len(candidates)
    extractor = thread_features()
    ahead = extractor.extract(query.pixels)
    mirrored = None
    counts = []
    for features in stored:
        if features is None:
            counts.append(0)
            continue
        count = extractor.inliers(ahead, features)
        if count < MIRROR_BELOW:  # a mirrored copy matches its original's mirror image
            if mirrored is None:
                mirrored = extractor.extract(query.pixels, mirror=True)
            count = max(count, extractor.inliers(mirrored, features))
        counts.append(count)
    return counts


class CopySearch:
    """Search by image with copy decisions.

    Args:
        requests: the request decoder (its threads also run the views and the verification).
        embed: ``(n, S, S, 3)`` uint8 -> ``(n, D)`` embeddings (the micro-batcher).
        calibration: the bundle's fitted copy model, or None (order by cosine, no decisions).
        tie_break_margin: cosine margin of the thumbnail tie-break among tied probabilities.
        views / verify: which query views, and whether to check local features (all, and yes,
            in the server; the benchmark's ablation measures each part).
    """

    def __init__(
        self,
        requests: RequestImages,
        embed: Callable[[np.ndarray], Awaitable[np.ndarray]],
        calibration: CopyCalibration | None,
        tie_break_margin: float = DEFAULT_MARGIN,
        views: ViewSet = ALL_VIEWS,
        verify: bool = True,
    ) -> None:
        self.requests = requests
        self.tie_break_margin = tie_break_margin
        self.views = views
        self.embed = embed
        self.calibration = calibration
        self.verify = verify and local_features.available()

    async def search(
        self, image: bytes, k: int, search: Callable[[np.ndarray, int], Awaitable[list[list[Hit]]]]
    ) -> list[CopyHit]:
        """The ``k`` best stored images for ``image``; ``search(vectors, k)`` queries the
        collection (with the caller's filter) for each row."""
        result = (await self.requests.decode_photos([image], with_features=False))[0]
        if isinstance(result, Exception):
            raise result
        views, kinds = await self.requests.run(
            query_views, result.pixels, self.requests.size, self.views
        )
        vectors = await self.embed(views)
        best = _best_per_item(await search(vectors, max(PER_VIEW, k)), kinds)
        ranked = sorted(best.values(), key=lambda e: -max(e[1], e[2]))
        checked = ranked[:VERIFIED] if self.verify else []
        inliers = await self.requests.run(_verify, result, [e[0] for e in checked])
        inliers += [0] * (len(ranked) - len(checked))
        whole = np.array([e[1] for e in ranked])
        window = np.array([e[2] for e in ranked])
        window = np.where(window < 0, whole, window)  # an item only whole views found
        if self.calibration is not None and ranked:
            probability = self.calibration.probability(whole, window, np.array(inliers))
            threshold = self.calibration.threshold
        else:
            probability, threshold = np.full(len(ranked), -1.0), np.inf
        hits = [
            CopyHit(
                dataclasses.replace(entry[0], score=float(max(entry[1], entry[2]))),
                float(w),
                float(v),
                int(n),
                float(p),
                bool(p >= threshold),
            )
            for entry, w, v, n, p in zip(ranked, whole, window, inliers, probability, strict=True)
        ]
        hits.sort(key=lambda h: (-h.copy_probability, -h.hit.score))
        return self._near_ties(hits, signatures(views[:1])[0])[:k]

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
