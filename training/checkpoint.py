"""Checkpoints as plain dicts (torchvision reference style), written atomically.

A checkpoint holds everything an exact resume needs (model, optimiser, scheduler, scaler, step, RNG
states) and everything a consumer needs without the training code's flags: the run's config and the
preprocessing facts (input size, mean, std, resize policy, colour order, embedding dimension).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simclr_search.files import atomic_file

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (``simclr_search.files``): never a torn file."""
    with atomic_file(path, mode=None) as handle:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)


def load_checkpoint(path: str | os.PathLike[str], kind: str = "") -> dict[str, Any]:
    """Load a checkpoint onto the CPU, refusing files that are not ours (or not of ``kind``,
    e.g. ``"decoder"``, written by ``simclr train-<kind>``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a simclr-search checkpoint (format {CHECKPOINT_FORMAT})")
    if kind and state.get("kind") != kind:
        raise ValueError(f"{path} is not a {kind} checkpoint (simclr train-{kind})")
    return state


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
