"""Helpers shared by the benchmark scripts: machine facts, peak FLOP/s, data location, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ``../shared/datasets`` beside the checkout; SIMCLR_DATASETS points elsewhere (a GPU machine that
# receives a copy of the data inside the working tree, say).
SHARED = Path(
    os.environ.get("SIMCLR_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets"
)


def cifar(split: str) -> Path:
    path = SHARED / "cifar10-jpg" / f"{split}.tar.gz"
    if not path.exists():
        raise SystemExit(f"benchmark needs {path} (../shared/datasets); it is not present")
    return path


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_gflops(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` matrix product: the practical ceiling of this CPU."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def best_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones: the least
    disturbed figure on a shared machine."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tick)
    return best


def embed_pixels(encoder: Any, manifest: Any, pixels: Any, batch: int = 256) -> Any:
    """``(N, S, S, 3)`` uint8 -> the encoder's ``(N, D)`` embeddings, ``batch`` images per run.

    For benchmarks that decode once and use the pixels twice (the server's thumbnails, mirror
    images); ``bundle.preprocess.normalize`` is the server's own step from pixels to input.
    """
    import numpy as np

    from simclr_search.bundle.preprocess import normalize

    return np.concatenate(
        [
            encoder(
                normalize(np.ascontiguousarray(pixels[i : i + batch]), manifest.mean, manifest.std)
            )
            for i in range(0, len(pixels), batch)
        ]
    )


def emit(result: dict[str, Any]) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(result, sort_keys=True))
