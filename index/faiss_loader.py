"""Import faiss only after its OpenMP threads are configured.

OpenMP reads ``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY`` once, when the runtime starts (on the first
import of faiss). A server shares its cores between gRPC, image decoding, ONNX Runtime and faiss, so
the thread count is set explicitly and the wait policy is PASSIVE: idle faiss threads sleep instead
of spinning on cores other work needs.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

_configured_threads: int | None = None


def configure_threads(threads: int) -> None:
    """Set faiss's thread count; call before the first search (before faiss loads, ideally)."""
    global _configured_threads
    if threads <= 0:
        raise ValueError(f"threads must be positive, got {threads}")
    _configured_threads = threads
    if "faiss" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ["OMP_NUM_THREADS"] = str(threads)
    else:
        sys.modules["faiss"].omp_set_num_threads(threads)


def faiss() -> ModuleType:
    """The faiss module, with the configured (or default: all cores) thread count applied."""
    if "faiss" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss as module

    if _configured_threads is not None:
        module.omp_set_num_threads(_configured_threads)
    return module
