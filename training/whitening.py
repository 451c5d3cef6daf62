"""Whitening of the served representation (PCA, or learned from edited copies), fitted at export.

Why: SimCLR's h (Chen et al. 2020) is trained for instance discrimination with cosine similarity, but
its variance is concentrated in a few directions that mostly encode coarse content; two different
photos of similar scenes then sit close in cosine while an edited copy of one drifts away along
those same directions. Whitening (Jegou & Chum 2012, "Negative evidences and co-occurrences in
image retrieval: the benefit of PCA and whitening"; the learned whitening of Radenovic et al. 2018
for CNN retrieval descriptors) rescales every principal direction to unit variance, so
similarity counts the fine, low-variance directions as much as the dominant ones.

Learned whitening (the default at export) goes further: from pairs of a library image and an edited
copy of it (``training/copy_edits.py``) it estimates the covariance of what edits change,
``C_S = E[(h - h')(h - h')^T]``, and maps ``h -> C_S^{-1/2} (h - mean)``, so the directions copies
move along count least and those they keep count most (Radenovic et al. 2018, Sec. 3.3, with pairs
from edits instead of 3-D reconstruction). ``benchmarks/bench_search_quality.py`` measures both
against plain h on near-duplicate search.

The map is linear and fixed after export, so it lives in the ONNX graphs:

* :class:`Whiten` after the encoder: unit h ``(B, D)`` -> ``(h - mean) @ projection`` ``(B, D)``;
* :class:`Unwhiten` before the decoder: a served embedding (any positive scale) -> the unit h
  it came from, exactly: ``h = mean + s * e @ inverse`` with the one ``s > 0`` that puts ``h`` on
  the unit sphere (``mean`` is an average of unit vectors, so it lies inside the sphere and the ray
  from it crosses the sphere once). That keeps ``Reconstruct`` working on whitened embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from simclr_search.bundle.preprocess import encoder_input
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.training.copy_edits import copy_edit

log = logging.getLogger("simclr.export")

POWER = -0.5  # eigenvalue ** -0.5: full whitening
RIDGE = 1e-3  # added to every eigenvalue, times their mean: keeps near-empty directions finite
MIN_IMAGES_PER_DIM = 4  # a covariance from fewer samples than this times D is mostly noise


@dataclass(frozen=True)
class Whitening:
    """A fitted whitening: ``mean`` ``(D,)``, ``projection`` and its ``inverse`` ``(D, D)`` float64."""

    mean: np.ndarray
    projection: np.ndarray
    inverse: np.ndarray
    images: int
    method: str = "pca"  # or "learned"

    def apply(self, h: np.ndarray) -> np.ndarray:
        """``(B, D)`` unit h -> ``(B, D)`` whitened, not normalised."""
        return (np.asarray(h, np.float64) - self.mean) @ self.projection

    def describe(self) -> dict[str, float | int | str]:
        method = "PCA" if self.method == "pca" else "learned from edited-copy pairs"
        return {"method": method, "power": POWER, "ridge": RIDGE, "images": self.images}


METHODS = ("learned", "pca")


def fit_whitening(h: np.ndarray, edited: np.ndarray | None = None) -> Whitening:
    """Fit on ``(N, D)`` unit-length h of library images; needs ``N > D`` (``N >= 4 D`` advised).

    Without ``edited``: PCA whitening, ``C^{-1/2}`` of the library's covariance ``C``. With
    ``edited`` ``(N, D)``, the h of an edited copy of each image: learned whitening,
    ``C_S^{-1/2}`` of the covariance of the differences.
    """
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"expected embeddings of shape (N, D), got {h.shape}")
    n, dim = h.shape
    if n <= dim:
        raise ValueError(f"whitening {dim} dimensions needs more than {dim} images, got {n}")
    if not np.isfinite(h).all():
        raise ValueError("embeddings to fit whitening on must be finite")
    mean = h.mean(0)
    if np.linalg.norm(mean) >= 1.0 - 1e-6:
        raise ValueError("the embeddings are all the same direction; nothing to whiten")
    if edited is None:
        centred = h - mean
        covariance = centred.T @ centred / (n - 1)
    else:
        edited = np.asarray(edited, dtype=np.float64)
        if edited.shape != h.shape or not np.isfinite(edited).all():
            raise ValueError(f"edited copies must be finite and of shape {h.shape}")
        differences = h - edited
        covariance = differences.T @ differences / n
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, 0.0) + RIDGE * max(float(eigenvalues.mean()), 1e-12)
    # Symmetric C^{-1/2} = V diag(w^-1/2) V^T (for cosine, the same as the rotated V diag(w^-1/2)).
    projection = (eigenvectors * eigenvalues**POWER) @ eigenvectors.T  # (D, D)
    inverse = (eigenvectors * eigenvalues ** (-POWER)) @ eigenvectors.T
    return Whitening(
        mean=mean,
        projection=projection,
        inverse=inverse,
        images=n,
        method="pca" if edited is None else "learned",
    )


class Whiten(nn.Module):
    """``(B, D)`` unit h -> ``(B, D)`` whitened h (normalise afterwards for cosine search)."""

    def __init__(self, whitening: Whitening) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(whitening.mean, dtype=torch.float32))
        self.register_buffer("projection", torch.tensor(whitening.projection, dtype=torch.float32))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) @ self.projection


class Unwhiten(nn.Module):
    """``(B, D)`` whitened embeddings, any positive scale -> ``(B, D)`` the unit h they came from."""

    def __init__(self, whitening: Whitening) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(whitening.mean, dtype=torch.float32))
        self.register_buffer("inverse", torch.tensor(whitening.inverse, dtype=torch.float32))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        u = embeddings @ self.inverse  # direction of h - mean, length unknown: (B, D)
        uu = (u * u).sum(1, keepdim=True).clamp_min(1e-12)
        mu = (u * self.mean).sum(1, keepdim=True)
        # |mean + s u| = 1  <=>  uu s^2 + 2 mu s + (|mean|^2 - 1) = 0; |mean| < 1 gives one s > 0.
        c = (self.mean * self.mean).sum() - 1.0
        s = (-mu + torch.sqrt((mu * mu - uu * c).clamp_min(0.0))) / uu
        return self.mean + s * u


def sample_embeddings(
    embed: Callable[[np.ndarray], np.ndarray],
    source: str,
    count: int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
    batch: int = 64,
    progress: bool = True,
    edit: Callable[[bytes, np.random.Generator], bytes] | None = None,
) -> np.ndarray:
    """``(n, D)`` embeddings of a uniform random sample of ``n <= count`` decodable library images;
    with ``edit``, ``(n, 2, D)``: each image's and an edited copy's (``edit(data, rng)``, which
    raises ``ValueError`` for bytes that do not decode, like ``training.copy_edits.copy_edit``).

    Reservoir sampling (Vitter's algorithm R) over the stream of encoded images, embedding each
    image as it enters the reservoir: memory is ``count`` vectors whatever the library's size and
    image sizes (holding ``count`` decoded photos would not fit), at the price of embedding about
    ``count * (1 + ln(N / count))`` images of a library of ``N``. ``embed`` maps encoder input
    ``(B, 3, S, S)`` to ``(B, D)``.
    """
    rng = np.random.default_rng(seed)
    slots: list[np.ndarray | None] = []
    pending: list[tuple[int, bytes]] = []

    edit_rng = np.random.default_rng([seed, 1])
    views = 1 if edit is None else 2

    def flush() -> None:
        good, arrays = [], []
        for slot, data in pending:
            try:
                copies = [data] if edit is None else [data, edit(data, edit_rng)]
                arrays.extend(encoder_input(copies, size, mean, std))
                good.append(slot)
            except ValueError:
                slots[slot] = None  # undecodable: the slot stays empty
        if arrays:
            vectors = np.asarray(embed(np.stack(arrays).astype(np.float32)))
            vectors = vectors.reshape(len(good), views, -1)
            for slot, vector in zip(good, vectors, strict=True):
                # In stream order, so a later replacement wins.
                slots[slot] = vector if edit is not None else vector[0]
        pending.clear()

    bar = tqdm(desc="whitening sample", unit="img", disable=not progress, mininterval=1.0)
    for seen, (_, data) in enumerate(iter_image_bytes(source)):
        bar.update()
        if seen < count:
            slots.append(None)
            pending.append((seen, data))
        else:
            j = int(rng.integers(0, seen + 1))
            if j < count:
                pending.append((j, data))
        if len(pending) >= batch:
            flush()
    flush()
    bar.close()
    kept = [v for v in slots if v is not None]
    if not kept:
        raise ValueError(f"no decodable images in {source} to fit whitening on")
    return np.stack(kept)


def fit_library_whitening(
    unit_h: nn.Module,
    images: str,
    count: int,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    progress: bool = True,
    method: str = "learned",
) -> Whitening | None:
    """Whitening fitted on ``count`` sampled library images (and, for ``learned``, an edited copy
    of each), or None (logged) when too few decode."""

    def embed(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return unit_h(torch.from_numpy(batch)).numpy()

    def edit(data: bytes, rng: np.random.Generator) -> bytes:
        return copy_edit(data, size, rng)

    learned = method == "learned"
    sample = sample_embeddings(
        embed, images, count, size, mean, std, progress=progress, edit=edit if learned else None
    )
    h, edited = (sample[:, 0], sample[:, 1]) if learned else (sample, None)
    needed = MIN_IMAGES_PER_DIM * h.shape[1]
    if len(h) < needed:
        log.warning(
            "not whitening: %d library images for %d dimensions (at least %d wanted); "
            "the bundle serves plain h",
            len(h),
            h.shape[1],
            needed,
        )
        return None
    log.info("%s whitening fitted on %d library images", method, len(h))
    return fit_whitening(h, edited)
