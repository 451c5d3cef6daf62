"""The service core's settings: one definition, from which ``simclr serve`` makes its flags and
``SIMCLR_*`` environment variables (``simclr_search.settings``) and library callers build it directly.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simclr_search.serving.core.images import ImageLimits
from simclr_search.serving.core.tie_break import DEFAULT_MARGIN
from simclr_search.settings import setting

_LIMITS = ImageLimits()


def auto_or_int(what: str, least: int) -> Callable[[str | int], str | int]:
    """A parser for a setting that takes ``auto`` or a whole number of at least ``least``; ``what``
    says what it must be, for the error."""

    def parse(value: str | int) -> str | int:
        if value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < least:
            raise argparse.ArgumentTypeError(f"{what}, got {value!r}")
        return number

    return parse


ENSEMBLE = auto_or_int("denoise ensemble must be auto, 1, 2, 4 or 8", 1)
LANES = auto_or_int("encoder lanes must be auto or a whole number >= 0", 0)


@dataclass
class ServiceConfig:
    """Everything the core needs; every field has a working default."""

    bundle: Path = setting(Path("bundle"), "model bundle folder", group="model and store")
    store: Path = setting(Path("store"), "index folder", group="model and store")
    default_collection: str = setting(
        "images",
        "collection used when a request names none",
        name="collection",
        group="model and store",
    )
    metric: str = setting(
        "cosine",
        "metric of a new collection",
        choices=("cosine", "ip", "l2"),
        group="model and store",
    )
    ray: str = setting(
        "",
        "serve sharded collections held by Ray actors (pip install 'simclr-search[ray]'): the"
        " cluster's address (auto, host:port, ray://host:port) or local; empty: the embedded store",
        metavar="ADDRESS",
        group="model and store",
    )
    shards: int = setting(4, "with --ray: shards of a new collection", group="model and store")
    int8: bool = setting(False, "use the bundle's INT8 encoder", group="model and store")
    device: str = setting("auto", "auto, cpu or cuda", group="model and store")
    max_batch: int = setting(32, "rows per encoder call (micro-batching)", group="inference")
    max_wait_ms: float = setting(
        2.0,
        "how long a batch waits for company once several requests are queued",
        group="inference",
    )
    decode_threads: int = setting(2, "threads decoding request images", group="inference")
    ort_threads: int = setting(2, "ONNX Runtime intra-op threads per model run", group="inference")
    # One batch at a time in a server (a backlog is split over lanes instead); the batch job runs
    # one single-threaded stream per core (serving.jobs.indexer.bulk_config).
    encoder_streams: int = setting(1, flag=False)
    encoder_lanes: int | str = setting(
        "auto",
        "a backlog of more than --max-batch images runs split over this many single-threaded "
        "encoder runs side by side; a smaller batch runs on --ort-threads threads; auto: one per "
        "--ort-threads thread on the CPU, none on a GPU",
        parse=LANES,
        group="inference",
    )
    faiss_threads: int = setting(1, "threads per FAISS search", group="inference")
    max_request_images: int = setting(256, flag=False)
    max_k: int = setting(1000, flag=False)
    tie_break_margin: float = setting(
        DEFAULT_MARGIN,
        "search by image without copy detection: hits scoring within this of the best are "
        "ordered by thumbnail likeness too, so the very copy beats a near-duplicate; 0: off",
        group="search",
    )
    copy_detection: bool = setting(
        True,
        "search by image as copy detection: the query's orientations, trimmed and windowed views, "
        "local features of the best candidates, and a calibrated is_copy (the bundle's "
        "copy_calibration.json); images are indexed with local features",
        group="search",
    )
    # Denoise returns the full image as PNG: 16 MP keeps the answer under the 64 MB message limit.
    max_denoise_pixels: int = setting(16_000_000, "largest image Denoise takes", group="limits")
    denoise_ensemble: int | str = setting(
        "auto",
        "Denoise: average this many rotated/flipped passes (auto: 4 up to half a megapixel, 1 "
        "above)",
        parse=ENSEMBLE,
        choices=("auto", 1, 2, 4, 8),
        group="inference",
    )
    max_image_bytes: int = setting(_LIMITS.max_bytes, "largest request image", group="limits")
    max_image_pixels: int = setting(
        _LIMITS.max_pixels, "most pixels a request image may decode to", group="limits"
    )

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_bytes, self.max_image_pixels)
