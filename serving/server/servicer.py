"""The gRPC servicer: protos in, core calls, protos out; domain errors mapped to status codes once.

Every RPC goes through :func:`_rpc`, which aborts with the code ``status.status_for`` gives and the
error's own message. An unexpected exception is logged with its traceback and answered INTERNAL
with a short message; a deadline the client set is passed to the core as a cancellation.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

import grpc
import numpy as np

from simclr_search.index.hits import Hit
from simclr_search.protos.simclr.v1 import search_pb2 as pb
from simclr_search.protos.simclr.v1 import search_pb2_grpc as pb_grpc
from simclr_search.serving.core.copy_search import CopyHit
from simclr_search.serving.core.dedup import DuplicateGroup, Member
from simclr_search.serving.core.errors import BadRequest
from simclr_search.serving.core.service import SearchService
from simclr_search.serving.core.writes import UpsertInput, parse_metadata
from simclr_search.serving.server.status import status_for

log = logging.getLogger(__name__)
STREAM_WINDOW = 32  # requests of one EmbedStream call embedded at once


async def _require_ready(service: SearchService, context: grpc.aio.ServicerContext) -> None:
    if not service.ready:
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, "the server is starting or shutting down; retry"
        )


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext, name: str) -> None:
    """End the call with the status code ``status.status_for`` maps ``exc`` to (INTERNAL if none)."""
    if isinstance(exc, grpc.aio.AbortError | grpc.RpcError):
        raise exc
    code = status_for(exc)
    if code is None:
        log.exception("unexpected error in %s", name)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name}; see server log")
    await context.abort(code, str(exc))


def _rpc(method):
    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        await _require_ready(self.service, context)
        try:
            return await method(self, request, context)
        except Exception as exc:
            await _abort_for(exc, context, method.__name__)

    return wrapper


def _vector(embedding: pb.Embedding) -> np.ndarray:
    return np.asarray(embedding.values, dtype=np.float32)


def _filter(message: pb.SearchRequest) -> tuple[str, Any] | None:
    if not message.HasField("filter"):
        return None
    which = message.filter.WhichOneof("value")
    if which is None:
        raise BadRequest(f"filter on {message.filter.field!r} has no value")
    return message.filter.field, getattr(message.filter, which)


def _hit(found: Hit | CopyHit) -> pb.SearchHit:
    copy = found if isinstance(found, CopyHit) else None
    hit = copy.hit if copy else found
    return pb.SearchHit(
        id=hit.external_id,
        score=hit.score,
        uri=hit.uri,
        metadata_json=json.dumps(hit.metadata),
        is_copy=copy.is_copy if copy else False,
        copy_probability=copy.copy_probability if copy else -1.0,
    )


def _member(member: Member, probability: float, exact: bool) -> pb.DuplicateMember:
    facts = member.facts
    return pb.DuplicateMember(
        id=member.id,
        uri=member.uri,
        content_sha256=member.content_hash,
        copy_probability=probability,
        exact=exact,
        width=facts.width if facts else 0,
        height=facts.height if facts else 0,
        bytes=facts.bytes if facts else 0,
        has_exif=bool(facts and facts.exif),
    )


def _group(group: DuplicateGroup, threshold: float) -> pb.DuplicateGroup:
    return pb.DuplicateGroup(
        keep=_member(group.keep, 1.0, False),
        copies=[
            _member(m, p, e)
            for m, p, e in zip(group.copies, group.scores, group.exact, strict=True)
        ],
        reason=group.reason,
        threshold=threshold,
    )


class ImageSearchServicer(pb_grpc.ImageSearchServicer):
    def __init__(self, service: SearchService) -> None:
        self.service = service

    async def _embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
        vectors = await self.service.embed([image.data for image in request.images])
        model = self.service.manifest.data["model"]
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=row) for row in vectors.tolist()],
            model=f"{model['name']}:{model['version']}",
        )

    @_rpc
    async def Embed(self, request: pb.EmbedRequest, context) -> pb.EmbedResponse:
        return await self._embed(request)

    async def EmbedStream(self, request_iterator, context):
        """Up to ``STREAM_WINDOW`` requests of one stream are embedded at once, so a client that
        writes ahead has them batched together (one that waits for each answer has one in flight);
        answers go out in request order. The first failure ends the stream with its code."""
        await _require_ready(self.service, context)
        window = asyncio.Semaphore(STREAM_WINDOW)
        answers: asyncio.Queue[asyncio.Future | None] = asyncio.Queue()  # the semaphore bounds it

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await window.acquire()
                    answers.put_nowait(asyncio.ensure_future(self._embed(request)))
            finally:
                answers.put_nowait(None)  # never blocks: the queue is unbounded

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await answers.get()) is not None:
                try:
                    response = await answer
                finally:
                    window.release()
                yield response
            await reader  # raises what reading the stream raised
        except Exception as exc:
            await _abort_for(exc, context, "EmbedStream")
        finally:
            reader.cancel()
            while not answers.empty():
                left = answers.get_nowait()
                if left is None:
                    continue
                if not left.done():
                    left.cancel()
                elif not left.cancelled():
                    left.exception()  # finished: retrieve its error (if any), or asyncio logs it

    @_rpc
    async def Denoise(self, request: pb.DenoiseRequest, context) -> pb.DenoiseResponse:
        return pb.DenoiseResponse(
            png=await self.service.denoise(request.image.data, request.noise_sigma)
        )

    @_rpc
    async def Reconstruct(self, request: pb.ReconstructRequest, context) -> pb.ReconstructResponse:
        which = request.WhichOneof("source")
        if which is None:
            raise BadRequest("Reconstruct needs an image or an embedding")
        image = request.image.data if which == "image" else None
        embedding = _vector(request.embedding) if which == "embedding" else None
        return pb.ReconstructResponse(png=await self.service.reconstruct(image, embedding))

    @_rpc
    async def Search(self, request: pb.SearchRequest, context) -> pb.SearchResponse:
        which = request.WhichOneof("query")
        if which is None:
            raise BadRequest("Search needs a query: image, vector or id")
        hits = await self.service.search(
            request.collection,
            request.k,
            image=request.image.data if which == "image" else None,
            vector=_vector(request.vector) if which == "vector" else None,
            item_id=request.id if which == "id" else None,
            filter=_filter(request),
        )
        return pb.SearchResponse(hits=[_hit(h) for h in hits])

    @_rpc
    async def Upsert(self, request: pb.UpsertRequest, context) -> pb.UpsertResponse:
        items = []
        for item in request.items:
            which = item.WhichOneof("content")
            items.append(
                UpsertInput(
                    id=item.id,
                    image=item.image.data if which == "image" else None,
                    embedding=_vector(item.embedding) if which == "embedding" else None,
                    uri=item.uri,
                    metadata=parse_metadata(item.metadata_json, item.id),
                )
            )
        return pb.UpsertResponse(ids=await self.service.upsert(request.collection, items))

    @_rpc
    async def Delete(self, request: pb.DeleteRequest, context) -> pb.DeleteResponse:
        deleted = await self.service.delete(
            request.collection, list(request.ids), request.ignore_missing
        )
        return pb.DeleteResponse(deleted=deleted)

    @_rpc
    async def Get(self, request: pb.GetRequest, context) -> pb.GetResponse:
        items = await self.service.get(request.collection, list(request.ids))
        return pb.GetResponse(
            items=[
                pb.StoredItem(
                    id=i.external_id,
                    uri=i.uri,
                    content_sha256=i.content_hash,
                    metadata_json=json.dumps(i.metadata),
                    embedding=pb.Embedding(values=i.vector.tolist())
                    if request.include_embeddings
                    else None,
                )
                for i in items
            ]
        )

    async def IndexImages(self, request_iterator, context):
        await _require_ready(self.service, context)
        statuses = {
            "indexed": pb.IndexImagesResult.INDEXED,
            "duplicate": pb.IndexImagesResult.SKIPPED_DUPLICATE,
            "failed": pb.IndexImagesResult.FAILED,
        }
        collection = ""
        batch: list[tuple[str, bytes, str, str]] = []
        try:
            async for request in request_iterator:
                collection = request.collection or collection
                batch.append((request.id, request.image.data, request.uri, request.metadata_json))
                if len(batch) >= self.service.config.max_batch:
                    for outcome in await self.service.index_images(collection, batch):
                        yield pb.IndexImagesResult(
                            id=outcome.id, status=statuses[outcome.status], error=outcome.error
                        )
                    batch = []
            if batch:
                for outcome in await self.service.index_images(collection, batch):
                    yield pb.IndexImagesResult(
                        id=outcome.id, status=statuses[outcome.status], error=outcome.error
                    )
        except Exception as exc:
            await _abort_for(exc, context, "IndexImages")

    async def FindDuplicates(self, request: pb.FindDuplicatesRequest, context):
        await _require_ready(self.service, context)
        try:
            groups, threshold = await self.service.find_duplicates(
                request.collection, request.exact_only, request.neighbours
            )
        except Exception as exc:
            await _abort_for(exc, context, "FindDuplicates")
        for group in groups:
            yield _group(group, threshold)

    @_rpc
    async def GetInfo(self, request: pb.GetInfoRequest, context) -> pb.GetInfoResponse:
        info = self.service.info()
        return pb.GetInfoResponse(
            server_version=info["server_version"],
            manifest_json=json.dumps(info["manifest"]),
            embedding_dim=info["embedding_dim"],
            embedding_normalized=info["embedding_normalized"],
            collections=[pb.CollectionInfo(**c) for c in info["collections"]],
            default_collection=info["default_collection"],
            max_batch=info["max_batch"],
            max_k=info["max_k"],
            max_image_bytes=info["max_image_bytes"],
            max_image_pixels=info["max_image_pixels"],
            providers=info["providers"],
            has_denoiser=info["has_denoiser"],
            has_decoder=info["has_decoder"],
        )
