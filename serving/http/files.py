"""A stored item's picture for the web page: read from the item's uri on this machine, returned as
a small JPEG (never the file itself: only pixels leave, and only of files that are items)."""

from __future__ import annotations

import asyncio
import io

import grpc

from simclr_search.bundle.decode import ImageDecodeError, decode_rgb
from simclr_search.bundle.sources import read_uri
from simclr_search.index.errors import NotFound

MAX_SIDE = 1024


def _thumbnail(uri: str, size: int, max_pixels: int) -> bytes:
    image = decode_rgb(read_uri(uri), max_pixels, min_side=size)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def item_image(service, collection: str, item_id: str, size: int) -> bytes:
    """JPEG bytes of item ``item_id``'s picture, at most ``size`` px on its longer side."""
    from simclr_search.serving.http.gateway import CallError

    if not item_id:
        raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "give the item's id as ?id=")
    if not 16 <= size <= MAX_SIDE:
        raise CallError(grpc.StatusCode.INVALID_ARGUMENT, f"size must be in 16..{MAX_SIDE}")
    try:
        item = (await service.get(collection, [item_id]))[0]
    except NotFound as exc:
        raise CallError(grpc.StatusCode.NOT_FOUND, str(exc)) from exc
    if not item.uri:
        raise CallError(grpc.StatusCode.NOT_FOUND, f"item {item_id!r} has no uri to read it from")
    try:
        return await asyncio.get_running_loop().run_in_executor(
            None, _thumbnail, item.uri, size, service.config.limits.max_pixels
        )
    except (OSError, ImageDecodeError) as exc:
        raise CallError(
            grpc.StatusCode.NOT_FOUND,
            f"item {item_id!r}'s uri {item.uri!r} is not a readable image on the server: {exc}",
        ) from exc
