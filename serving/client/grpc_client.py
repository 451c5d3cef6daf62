"""Python clients for the ImageSearch service: :class:`Client` (blocking) and :class:`AsyncClient`.

with Client("127.0.0.1:50051") as client:
    hits = client.search(image=open("query.jpg", "rb").read(), k=5)
    vectors = client.embed([open("a.jpg", "rb").read()])
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from simclr_search.protos.simclr.v1 import search_pb2 as pb
from simclr_search.protos.simclr.v1 import search_pb2_grpc as pb_grpc

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


@dataclass(frozen=True)
class SearchResult:
    id: str
    score: float
    uri: str
    metadata: dict[str, Any]
    is_copy: bool = False  # search by image with copy detection: a copy of the query
    copy_probability: float = -1.0  # calibrated; -1: no calibrated answer


def _search_request(collection, image, vector, item_id, k, filter) -> pb.SearchRequest:
    request = pb.SearchRequest(collection=collection, k=k)
    given = [x is not None for x in (image, vector, item_id)]
    if sum(given) != 1:
        raise ValueError("give exactly one of image, vector or id")
    if image is not None:
        request.image.data = image
    elif vector is not None:
        request.vector.values.extend(np.asarray(vector, dtype=np.float32).ravel().tolist())
    else:
        request.id = item_id
    if filter is not None:
        field, value = filter
        request.filter.field = field
        if isinstance(value, bool):
            request.filter.bool_value = value
        elif isinstance(value, int):
            request.filter.int_value = value
        elif isinstance(value, float):
            request.filter.double_value = value
        else:
            request.filter.string_value = str(value)
    return request


def _results(response: pb.SearchResponse) -> list[SearchResult]:
    return [
        SearchResult(
            h.id, h.score, h.uri, json.loads(h.metadata_json or "{}"), h.is_copy, h.copy_probability
        )
        for h in response.hits
    ]


def _index_request(collection: str, item: tuple[str, bytes, str, dict]) -> pb.IndexImagesRequest:
    item_id, data, uri, metadata = item
    return pb.IndexImagesRequest(
        collection=collection,
        id=item_id,
        image=pb.Image(data=data),
        uri=uri,
        metadata_json=json.dumps(metadata or {}),
    )


def _embed_request(images: list[bytes]) -> pb.EmbedRequest:
    return pb.EmbedRequest(images=[pb.Image(data=d) for d in images])


def _vectors(response: pb.EmbedResponse) -> np.ndarray:
    return np.array([e.values for e in response.embeddings], dtype=np.float32)


def _channel_args(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def _open_channel(kind, address: str, root_certificates: bytes | None):
    """A channel from ``kind`` (``grpc`` or ``grpc.aio``): TLS with ``root_certificates``."""
    if root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates)
        return kind.secure_channel(address, credentials, _OPTIONS)
    return kind.insecure_channel(address, _OPTIONS)


class Client:
    """Blocking client. ``token`` sends a bearer token; ``root_certificates`` turns on TLS."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        root_certificates: bytes | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.channel = _open_channel(grpc, address, root_certificates)
        self.stub = pb_grpc.ImageSearchStub(self.channel)
        self.metadata = _channel_args(token)
        self.timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        return method(request, timeout=self.timeout, metadata=self.metadata)

    def embed(self, images: list[bytes]) -> np.ndarray:
        return _vectors(self._call(self.stub.Embed, _embed_request(images)))

    def embed_stream(
        self, requests: Iterable[list[bytes]], timeout: float | None = None
    ) -> Iterator[np.ndarray]:
        """One ``EmbedStream`` call: ``(n, D)`` embeddings per list of images, in order, as they
        come (``timeout`` covers the whole stream; default none)."""
        call = self.stub.EmbedStream(
            (_embed_request(images) for images in requests),
            timeout=timeout,
            metadata=self.metadata,
        )
        for response in call:
            yield _vectors(response)

    def search(
        self,
        image: bytes | None = None,
        vector=None,
        id: str | None = None,
        k: int = 10,
        collection: str = "",
        filter: tuple[str, Any] | None = None,
    ) -> list[SearchResult]:
        return _results(
            self._call(self.stub.Search, _search_request(collection, image, vector, id, k, filter))
        )

    def upsert_images(self, items: list[tuple[str, bytes]], collection: str = "") -> list[str]:
        request = pb.UpsertRequest(
            collection=collection,
            items=[pb.UpsertItem(id=i, image=pb.Image(data=d)) for i, d in items],
        )
        return list(self._call(self.stub.Upsert, request).ids)

    def upsert_vectors(
        self, items: list[tuple[str, np.ndarray]], collection: str = ""
    ) -> list[str]:
        request = pb.UpsertRequest(
            collection=collection,
            items=[
                pb.UpsertItem(
                    id=i, embedding=pb.Embedding(values=np.asarray(v, np.float32).tolist())
                )
                for i, v in items
            ],
        )
        return list(self._call(self.stub.Upsert, request).ids)

    def delete(self, ids: list[str], collection: str = "", ignore_missing: bool = False) -> int:
        request = pb.DeleteRequest(collection=collection, ids=ids, ignore_missing=ignore_missing)
        return self._call(self.stub.Delete, request).deleted

    def get(
        self, ids: list[str], collection: str = "", include_embeddings: bool = False
    ) -> list[pb.StoredItem]:
        request = pb.GetRequest(
            collection=collection, ids=ids, include_embeddings=include_embeddings
        )
        return list(self._call(self.stub.Get, request).items)

    def denoise(self, image: bytes, noise_sigma: float = 0.0) -> bytes:
        return self._call(
            self.stub.Denoise,
            pb.DenoiseRequest(image=pb.Image(data=image), noise_sigma=noise_sigma),
        ).png

    def info(self) -> pb.GetInfoResponse:
        return self._call(self.stub.GetInfo, pb.GetInfoRequest())

    def index_images(
        self, items: Iterable[tuple[str, bytes, str, dict]], collection: str = ""
    ) -> Iterator[pb.IndexImagesResult]:
        requests = (_index_request(collection, item) for item in items)
        yield from self.stub.IndexImages(requests, metadata=self.metadata)

    def find_duplicates(
        self,
        collection: str = "",
        exact_only: bool = False,
        neighbours: int = 0,
        timeout: float | None = None,
    ) -> Iterator[pb.DuplicateGroup]:
        """The collection's duplicate groups, largest first (the whole collection is compared
        before the first group arrives: allow minutes on a big one, hence no default deadline)."""
        request = pb.FindDuplicatesRequest(
            collection=collection, exact_only=exact_only, neighbours=neighbours
        )
        yield from self.stub.FindDuplicates(request, timeout=timeout, metadata=self.metadata)


class AsyncClient:
    """The same calls for asyncio code (``grpc.aio``)."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        root_certificates: bytes | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.channel = _open_channel(grpc.aio, address, root_certificates)
        self.stub = pb_grpc.ImageSearchStub(self.channel)
        self.metadata = _channel_args(token)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def embed(self, images: list[bytes], timeout: float | None = None) -> np.ndarray:
        response = await self.stub.Embed(
            _embed_request(images), timeout=timeout or self.timeout, metadata=self.metadata
        )
        return _vectors(response)

    def embed_stream(self, timeout: float | None = None) -> EmbedStream:
        """Open an ``EmbedStream`` call (``timeout`` covers the whole stream; default none)."""
        return EmbedStream(self.stub.EmbedStream(timeout=timeout, metadata=self.metadata))

    async def search(
        self,
        image: bytes | None = None,
        vector=None,
        id: str | None = None,
        k: int = 10,
        collection: str = "",
        filter: tuple[str, Any] | None = None,
    ) -> list[SearchResult]:
        response = await self.stub.Search(
            _search_request(collection, image, vector, id, k, filter),
            timeout=self.timeout,
            metadata=self.metadata,
        )
        return _results(response)

    async def upsert_vectors(
        self, items: list[tuple[str, np.ndarray]], collection: str = ""
    ) -> list[str]:
        request = pb.UpsertRequest(
            collection=collection,
            items=[
                pb.UpsertItem(
                    id=i, embedding=pb.Embedding(values=np.asarray(v, np.float32).tolist())
                )
                for i, v in items
            ],
        )
        return list(
            (await self.stub.Upsert(request, timeout=self.timeout, metadata=self.metadata)).ids
        )

    async def info(self) -> pb.GetInfoResponse:
        return await self.stub.GetInfo(
            pb.GetInfoRequest(), timeout=self.timeout, metadata=self.metadata
        )

    async def index_images(
        self, items: Iterable[tuple[str, bytes, str, dict]], collection: str = ""
    ) -> AsyncIterator[pb.IndexImagesResult]:
        call = self.stub.IndexImages(
            (_index_request(collection, item) for item in items), metadata=self.metadata
        )
        async for result in call:
            yield result


class EmbedStream:
    """An open ``EmbedStream`` call: ``await stream.embed(images)`` as often as needed, then
    ``await stream.close()`` (or ``async with``). To have several requests in flight on one stream
    (the server embeds up to 32 at once, batched together), ``send`` ahead from one task and
    ``receive`` the answers, in order, from another. A server error raises
    ``grpc.aio.AioRpcError`` with its status code, and ends the stream."""

    def __init__(self, call) -> None:
        self._call = call

    async def __aenter__(self) -> EmbedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def embed(self, images: list[bytes]) -> np.ndarray:
        await self.send(images)
        return await self.receive()

    async def send(self, images: list[bytes]) -> None:
        await self._call.write(_embed_request(images))

    async def receive(self) -> np.ndarray:
        """The answer to the oldest request not yet received: ``(n, D)``."""
        response = await self._call.read()
        if response is grpc.aio.EOF:  # an error status raises in read(); this is a clean end
            raise RuntimeError("the server ended the EmbedStream call without answering")
        return _vectors(response)

    async def close(self) -> None:
        if not self._call.done():
            await self._call.done_writing()
            while await self._call.read() is not grpc.aio.EOF:
                pass
