"""The bundle's image-to-image models behind the service: Denoise and Reconstruct.

Both run a whole image through a model for up to seconds, so they share one thread of their own:
they queue behind each other and never hold up Embed's decoding or the encoder's batches. A caller
that cancels (or whose deadline passes) stops a tiled denoise at its next group of tiles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from simclr_search.bundle.runtime import Decoder, Denoiser
from simclr_search.serving.core.errors import BadRequest, MissingModel
from simclr_search.serving.core.images import ImageLimits, check_header, decode_rgb, encode_png


class ImageModels:
    """Denoise (image -> image) and Reconstruct (embedding -> image), PNG out.

    Args:
        bundle: the bundle's folder, named in the error when a model is missing.
        denoiser / decoder: the loaded models, or ``None`` when the bundle has none.
        limits: request image limits; denoising also caps pixels at ``max_denoise_pixels``.
        embedding_dim: what Reconstruct's embeddings must have.
    """

    def __init__(
        self,
        bundle: Path,
        denoiser: Denoiser | None,
        decoder: Decoder | None,
        limits: ImageLimits,
        max_denoise_pixels: int,
        embedding_dim: int,
    ) -> None:
        self.bundle = bundle
        self.denoiser = denoiser
        self.decoder = decoder
        self.denoise_limits = dataclasses.replace(
            limits, max_pixels=min(limits.max_pixels, max_denoise_pixels)
        )
        self.embedding_dim = embedding_dim
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="image-models")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def denoise(self, image: bytes, sigma: float) -> bytes:
        """The denoised image as PNG, full size; ``sigma`` on the 0-255 scale, 0 = unknown (blind)."""
        if self.denoiser is None:
            raise MissingModel(
                f"the bundle at {self.bundle} has no denoiser; train one with "
                "'simclr train-denoiser' and add it with 'simclr export --denoiser'"
            )
        if not math.isfinite(sigma) or not 0 <= sigma <= 255:
            raise BadRequest(
                f"noise_sigma must be between 0 and 255 on the 0-255 scale (0 = unknown), got {sigma}"
            )
        check_header(
            image, self.denoise_limits
        )  # refuse an oversize image now, not after the queue
        loop = asyncio.get_running_loop()
        pixels = await loop.run_in_executor(self._pool, decode_rgb, image, self.denoise_limits)
        gone = threading.Event()  # set when the caller cancels or its deadline passes
        try:
            clean = await loop.run_in_executor(
                self._pool, self.denoiser, pixels, float(sigma) if sigma > 0 else None, gone.is_set
            )
        except asyncio.CancelledError:
            gone.set()  # the running tile loop stops at its next group; queued work is dropped
            raise
        return await loop.run_in_executor(self._pool, encode_png, clean)

    async def reconstruct(self, embedding: np.ndarray | None) -> bytes:
        """The image for one embedding ``(D,)``, as PNG at the encoder's input size."""
        if self.decoder is None:
            raise MissingModel(
                f"the bundle at {self.bundle} has no decoder; train one with 'simclr train-decoder' "
                "and add it with 'simclr export --decoder'"
            )
        if embedding is None or embedding.ndim != 1 or embedding.shape[0] != self.embedding_dim:
            got = "none" if embedding is None else embedding.shape[0]
            raise BadRequest(f"the embedding must have {self.embedding_dim} values, got {got}")
        if not np.isfinite(embedding).all() or not np.any(embedding):
            raise BadRequest("the embedding must be finite and not all zero")
        loop = asyncio.get_running_loop()
        pixels = await loop.run_in_executor(self._pool, self.decoder, embedding[None, :])
        return encode_png(
            (np.clip(pixels[0], 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        )
