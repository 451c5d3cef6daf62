"""Request images -> model-sized pixels, decoded where it costs the event loop least.

Every Embed, Search-by-image, Upsert and IndexImages call starts here. Decoding blocks, so it runs in
a small thread pool, one executor job per thread rather than per image (for thumbnails the hand-off
costs as much as the decode); one small image is decoded inline, under a pixel cap that keeps a tiny
file expanding into a huge image off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from simclr_search.bundle.decode import ImageDecodeError, header_facts
from simclr_search.serving.core import local_features
from simclr_search.serving.core.errors import BadRequest, InvalidImage
from simclr_search.serving.core.images import ImageLimits, decode_for_model, decode_photo
from simclr_search.serving.core.photo_views import middle, tiles
from simclr_search.serving.core.signature import PhotoFacts, compose
from simclr_search.serving.core.tie_break import signatures

INLINE_DECODE_BYTES = 16 * 1024
INLINE_DECODE_PIXELS = 128 * 128


def tile_signatures(tiles: list[np.ndarray]) -> list[bytes]:
    """Each picture's tie-break thumbnail signature, from the :func:`photo_views.middle` of its
    ``(T, S, S, 3)`` tiles, in one pass for all of them."""
    return signatures(np.stack([middle(t) for t in tiles])) if tiles else []


def decode_chunk(
    images: list[bytes], size: int, limits: ImageLimits
) -> list[np.ndarray | InvalidImage]:
    """Decode each image to its ``(T, size, size, 3)`` uint8 tiles; a bad one comes back as its
    error."""
    out: list[np.ndarray | InvalidImage] = []
    for data in images:
        try:
            out.append(decode_for_model(data, size, limits))
        except InvalidImage as exc:
            out.append(exc)
    return out


@dataclass(frozen=True)
class Photo:
    """A request image decoded for copy detection."""

    pixels: np.ndarray  # (H, W, 3) uint8, longer side <= photo_views.PHOTO_SIDE
    tiles: np.ndarray  # (T, S, S, 3) uint8: the squares whose pooled embeddings are stored
    signature: bytes  # what the index keeps: the tie-break thumbnail, then the local features


_local = threading.local()


def facts_of(data: bytes) -> PhotoFacts | None:
    """The file's facts for choosing a duplicate's keeper (None where its header will not say)."""
    try:
        width, height, exif = header_facts(data)
    except ImageDecodeError:
        return None
    return PhotoFacts(width, height, len(data), exif)


def thread_features() -> local_features.LocalFeatures:
    """This thread's ORB extractor and matcher (OpenCV objects are not shared across threads)."""
    if not hasattr(_local, "features"):
        _local.features = local_features.LocalFeatures()
    return _local.features


def decode_photo_chunk(
    images: list[bytes], size: int, limits: ImageLimits, with_features: bool
) -> list[Photo | InvalidImage]:
    """Decode each image for copy detection (with its local features); a bad one comes back as its
    error."""
    decoded: list[tuple[np.ndarray, np.ndarray, bytes] | InvalidImage] = []
    for data in images:
        try:
            pixels = decode_photo(data, limits)
        except InvalidImage as exc:
            decoded.append(exc)
            continue
        decoded.append((pixels, tiles(pixels, size), data))
    good = [d for d in decoded if not isinstance(d, InvalidImage)]
    thumbs = iter(tile_signatures([view for _, view, _ in good]))
    out: list[Photo | InvalidImage] = []
    for entry in decoded:
        if isinstance(entry, InvalidImage):
            out.append(entry)
            continue
        pixels, view, data = entry
        signature = next(thumbs)  # one thumbnail pass for the chunk: cheaper than one per image
        if with_features:
            features = local_features.pack(*thread_features().extract(pixels))
            signature = compose(signature, facts_of(data), features)
        out.append(Photo(pixels, view, signature))
    return out


class RequestImages:
    """Decodes request images for a model of input ``size`` with ``threads`` decode threads.

    Args:
        size: the encoder's square input side (the manifest's ``input_size``).
        limits: byte / pixel limits and allowed formats, checked before any pixel is decoded.
        threads: decode threads (set with the ONNX Runtime and FAISS threads to share the cores).
        max_images: most images one request may carry.
    """

    def __init__(self, size: int, limits: ImageLimits, threads: int, max_images: int) -> None:
        if size <= 0 or threads <= 0 or max_images <= 0:
            raise ValueError(
                f"size, threads and max_images must be positive, got {size}, {threads}, {max_images}"
            )
        self.size = size
        self.limits = limits
        self.threads = threads
        self.max_images = max_images
        self._inline_limits = dataclasses.replace(
            limits, max_pixels=min(limits.max_pixels, INLINE_DECODE_PIXELS)
        )
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def check_count(self, images: list[bytes]) -> None:
        """At least one image and at most ``max_images`` in one request (:class:`BadRequest`)."""
        if not images:
            raise BadRequest("no images in the request")
        if len(images) > self.max_images:
            raise BadRequest(f"{len(images)} images in one request; the limit is {self.max_images}")

    async def decode(self, images: list[bytes]) -> list[np.ndarray]:
        """Encoded images -> each one's ``(T, S, S, 3)`` uint8 tiles, in parallel; the first bad
        image fails the call."""
        self.check_count(images)
        results = await self.decode_each(images)
        for i, result in enumerate(results):
            if isinstance(result, InvalidImage):
                if len(images) > 1:
                    raise InvalidImage(f"image {i}: {result}") from result
                raise result
        return results

    async def decode_each(self, images: list[bytes]) -> list[np.ndarray | InvalidImage]:
        """Decode a batch, one result per image: its ``(T, S, S, 3)`` uint8 tiles or its error."""
        if not images:
            return []
        if len(images) == 1 and len(images[0]) <= INLINE_DECODE_BYTES:
            try:
                return [decode_for_model(images[0], self.size, self._inline_limits)]
            except InvalidImage:
                pass  # over the cap, or bad: the thread path decodes again and says why
        loop = asyncio.get_running_loop()
        chunk = -(-len(images) // self.threads)
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._pool, decode_chunk, images[i : i + chunk], self.size, self.limits
                )
                for i in range(0, len(images), chunk)
            )
        )
        return [result for part in parts for result in part]

    async def decode_photos(
        self, images: list[bytes], with_features: bool
    ) -> list[Photo | InvalidImage]:
        """Decode for copy detection, one result per image (a :class:`Photo` or its error)."""
        if not images:
            return []
        if len(images) > self.max_images:
            self.check_count(images)
        loop = asyncio.get_running_loop()
        chunk = -(-len(images) // self.threads)
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._pool,
                    decode_photo_chunk,
                    images[i : i + chunk],
                    self.size,
                    self.limits,
                    with_features,
                )
                for i in range(0, len(images), chunk)
            )
        )
        return [result for part in parts for result in part]

    async def run(self, fn, *args):
        """``fn(*args)`` in a decode thread (CPU work on request pixels)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
