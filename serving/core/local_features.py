"""Local features for geometric verification: ORB keypoints, matched and checked with RANSAC.

Why: a global embedding says two pictures look alike; a copy shares the same *points* in the same
arrangement. Matching binary ORB descriptors (Rublee et al. 2011) between the query and a candidate
(the nearest two by Hamming distance with faiss's binary index: the same matches as OpenCV's brute
force matcher, about twice as fast here) and counting the matches that one similarity transform
explains (RANSAC, Fischler & Bolles 1981) tells a crop, an overlay or an inset of a photo from a
different photo of a similar scene, which the embedding cannot. Only the top candidates of the
embedding search are checked, so the cost per query stays a few milliseconds per candidate.

Candidates: an embedding can rank a copy's original beyond the candidates checked (a photo
under heavy stripes). So the :data:`VOTE_CODES` strongest descriptors of each stored photo are
also stored as the index's vote codes (``index.code_votes``), and a query's :data:`VOTE_QUERY`
strongest vote for the photos they match: the :data:`VOTED` best are verified too. The counts
were chosen on the calibration split (docs/experiments.md, "Candidates from local features").

Storage: :func:`pack` makes an opaque blob (version byte, count, float16 ``(x, y)`` positions at
:data:`serving.core.photo_views.PHOTO_SIDE`, 32-byte descriptors) that the index keeps beside the
vector without knowing what it is.
"""

from __future__ import annotations

import struct

import numpy as np

from simclr_search.index.faiss_loader import faiss

try:
    import cv2
except ImportError:  # pragma: no cover - a declared dependency of the serve extra
    cv2 = None

_BITS = 256  # ORB descriptors: 32 bytes

#: Keypoints stored per image.
FEATURES = 400
#: Keypoints taken from a query: more than stored, because a query's own additions (the caption
#: lines and title bar around an inset photo) take many of the strongest corners.
QUERY_FEATURES = 800
VERSION = 1
#: Of a stored photo's descriptors, the strongest this many are its vote codes.
VOTE_CODES = 64
#: Of a query's descriptors, the strongest this many vote.
VOTE_QUERY = 400
#: Photos with the most votes verified beside the embedding's candidates.
VOTED = 4
#: A vote's nearest stored code is at most this many bits away (of 256)...
VOTE_DISTANCE = 64
#: ...and nearer than this fraction of the nearest code of another photo.
VOTE_RATIO = 0.8
_HEADER = struct.Struct("<BH")
#: Lowe's ratio test: a match counts if clearly better than the second best.
RATIO = 0.8
#: RANSAC reprojection tolerance, pixels at PHOTO_SIDE.
REPROJECTION = 8.0
MIN_MATCHES = 5
#: Pictures with a shorter side below this get no features (a 32 px icon has none worth keeping).
MIN_SIDE = 64
#: Enough for a 99% chance of an all-inlier pair at a fifth of inliers among the matches.
RANSAC_ITERATIONS = 200


def available() -> bool:
    return cv2 is not None


class LocalFeatures:
    """ORB on ``(H, W, 3)`` uint8 photos. One instance per thread (OpenCV objects are not shared)."""

    def __init__(self, features: int = FEATURES) -> None:
        if cv2 is None:
            raise RuntimeError("local features need opencv-python-headless (pip install it)")
        self._orb = cv2.ORB_create(nfeatures=features)
        self._features = features
        self._faiss = faiss()

    def extract(
        self, pixels: np.ndarray, mirror: bool = False, features: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 2)`` float32 positions and ``(n, 32)`` uint8 descriptors (``n`` may be 0), at
        most ``features`` of them (the constructor's count by default), strongest first (ORB's
        Harris response; OpenCV lists them by pyramid level)."""
        self._orb.setMaxFeatures(features or self._features)
        grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
        if min(grey.shape) < MIN_SIDE:  # an icon: too few pixels for corners worth matching
            return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
        if min(grey.shape) < 128:  # thumbnails: FAST needs room around each corner
            scale = 128 / min(grey.shape)
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        if mirror:
            grey = np.ascontiguousarray(grey[:, ::-1])
        keypoints, descriptors = self._orb.detectAndCompute(grey, None)
        if descriptors is None:
            return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
        order = np.argsort([-k.response for k in keypoints], kind="stable")
        points = np.array([k.pt for k in keypoints], np.float32)
        return points[order], np.ascontiguousarray(descriptors[order])

    def inliers(
        self, query: tuple[np.ndarray, np.ndarray], stored: tuple[np.ndarray, np.ndarray]
    ) -> int:
        """Matches between ``query`` and ``stored`` that one similarity transform explains."""
        return self.match(query, stored)[0]

    def match(
        self, query: tuple[np.ndarray, np.ndarray], stored: tuple[np.ndarray, np.ndarray]
    ) -> tuple[int, float]:
        """``(inliers, spread)``: the matches one similarity transform explains, and how much of a
        picture they cover: the larger over the two sides of the inliers' bounding box as a
        fraction of that side's keypoints' box. A copy's matches spread over the whole of at
        least one of the two (a crop covers all of itself); the matches two different photos get
        from the same logo or emoji overlay stay in a small patch of both."""
        (q_points, q_desc), (s_points, s_desc) = query, stored
        if len(q_desc) < MIN_MATCHES or len(s_desc) < MIN_MATCHES:
            return 0, 0.0
        # One OpenMP thread for this search, set for the calling thread only (OpenMP keeps the
        # setting per thread): waking a team of threads costs about ten times the search itself,
        # and the store's own FAISS searches in other threads keep their configured count.
        self._faiss.omp_set_num_threads(1)
        index = self._faiss.IndexBinaryFlat(_BITS)
        index.add(np.ascontiguousarray(s_desc))
        distance, nearest = index.search(np.ascontiguousarray(q_desc), 2)
        good = distance[:, 0] < RATIO * distance[:, 1]
        if good.sum() < MIN_MATCHES:
            return 0, 0.0
        src = q_points[good]
        dst = s_points[nearest[good, 0]]
        _, mask = cv2.estimateAffinePartial2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=REPROJECTION,
            maxIters=RANSAC_ITERATIONS,
            confidence=0.99,
        )
        if mask is None or not mask.any():
            return 0, 0.0
        keep = mask.ravel().astype(bool)
        spread = max(_coverage(src[keep], q_points), _coverage(dst[keep], s_points))
        return int(keep.sum()), spread


def _coverage(inliers: np.ndarray, points: np.ndarray) -> float:
    """Area of the inliers' bounding box over the area of all keypoints' box (0..1)."""
    extent = np.ptp(points, axis=0)
    if extent.min() <= 0:
        return 0.0
    return float(np.prod(np.ptp(inliers, axis=0)) / np.prod(extent))


def pack(points: np.ndarray, descriptors: np.ndarray) -> bytes:
    """Positions and descriptors -> the stored blob."""
    n = len(descriptors)
    return (
        _HEADER.pack(VERSION, n)
        + points.astype(np.float16).tobytes()
        + np.ascontiguousarray(descriptors, dtype=np.uint8).tobytes()
    )


def unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The blob -> ``(points, descriptors)``, or None for an empty or unknown blob."""
    if len(blob) < _HEADER.size:
        return None
    version, n = _HEADER.unpack_from(blob)
    if version != VERSION or len(blob) != _HEADER.size + n * (4 + 32):
        return None
    offset = _HEADER.size
    points = np.frombuffer(blob, np.float16, 2 * n, offset).reshape(n, 2).astype(np.float32)
    descriptors = np.frombuffer(blob, np.uint8, 32 * n, offset + 4 * n).reshape(n, 32)
    return points, descriptors
