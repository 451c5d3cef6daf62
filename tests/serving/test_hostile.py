"""A hostile client against a real server: a corpus of bad metadata, protocol and image inputs,
each answered with the right status code and a message a person can act on, and the server still
healthy afterwards (a filtered search works, the stream goes on, nothing else is refused)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.index.checks import MAX_ID_LENGTH, MAX_METADATA_BYTES, MAX_URI_LENGTH
from simclr_search.protos.simclr.v1 import search_pb2 as pb
from simclr_search.protos.simclr.v1 import search_pb2_grpc as pb_grpc

DIM = 64


def _png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


def _noise_png() -> bytes:
    return _png(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))


def _deep(levels: int) -> str:
    return '{"a": ' + "[" * levels + "]" * levels + "}"


def _vector(scale: float = 1.0) -> pb.Embedding:
    return pb.Embedding(values=[scale] * DIM)


# (category, name, request, words the message must hold). Every one is INVALID_ARGUMENT.
CORPUS: list[tuple[str, str, Callable[[], pb.UpsertRequest], str]] = [
    ("metadata", "NaN", lambda: _upsert(metadata_json='{"a": NaN}'), "NaN is not JSON"),
    ("metadata", "Infinity", lambda: _upsert(metadata_json='{"a": -Infinity}'), "not JSON"),
    ("metadata", "5000 levels deep", lambda: _upsert(metadata_json=_deep(5000)), "deeper than"),
    ("metadata", "40 levels deep", lambda: _upsert(metadata_json=_deep(40)), "deeper than"),
    (
        "metadata",
        "10 MB",
        lambda: _upsert(metadata_json=json.dumps({"a": "x" * 10_000_000})),
        f"the limit is {MAX_METADATA_BYTES}",
    ),
    ("metadata", "an array", lambda: _upsert(metadata_json="[1, 2]"), "JSON object"),
    ("metadata", "not JSON", lambda: _upsert(metadata_json="{'a': 1}"), "not valid JSON"),
    ("protocol", "uri too long", lambda: _upsert(uri="u" * (MAX_URI_LENGTH + 1)), "uri of id"),
    ("protocol", "id too long", lambda: _upsert(id="i" * (MAX_ID_LENGTH + 88)), "at most 512"),
    ("protocol", "empty id", lambda: _upsert(id=""), "non-empty"),
    ("protocol", "overflowing vector", lambda: _upsert(embedding=_vector(3e38)), "norm"),
    ("protocol", "huge finite vector", lambda: _upsert(embedding=_vector(3e19)), "norm"),
    ("protocol", "wrong dimension", lambda: _upsert(embedding=pb.Embedding(values=[1.0])), "dim"),
    ("protocol", "NaN vector", lambda: _upsert(embedding=_vector(float("nan"))), "NaN"),
    ("protocol", "no content", lambda: pb.UpsertRequest(items=[pb.UpsertItem(id="x")]), "neither"),
    ("image", "text as an image", lambda: _upsert(image=b"hello, not an image"), "format"),
    (
        "image",
        "truncated PNG",
        lambda: _upsert(image=_noise_png()[:300]),
        "decode",
    ),
]


def _upsert(
    id: str = "item",
    image: bytes | None = None,
    embedding: pb.Embedding | None = None,
    uri: str = "",
    metadata_json: str = "",
) -> pb.UpsertRequest:
    item = pb.UpsertItem(id=id, uri=uri, metadata_json=metadata_json)
    if image is not None:
        item.image.data = image
    else:
        item.embedding.CopyFrom(embedding if embedding is not None else _vector())
    return pb.UpsertRequest(items=[item])


@pytest.fixture
def stub(server):
    _, address = server
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    yield pb_grpc.ImageSearchStub(channel)
    channel.close()


def _filtered_search_works(stub) -> None:
    query = pb.SearchRequest(
        k=5, vector=_vector(), filter=pb.MetadataFilter(field="a", int_value=1)
    )
    stub.Search(query)  # raised INTERNAL once a NaN had been stored


@pytest.mark.parametrize(
    ("category", "name", "request_", "words"), CORPUS, ids=[c[1] for c in CORPUS]
)
def test_corpus_is_invalid_argument(stub, category, name, request_, words) -> None:
    stub.Upsert(_upsert(id="good", metadata_json='{"a": 1}'))
    with pytest.raises(grpc.RpcError) as info:
        stub.Upsert(request_())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (category, info.value.details())
    details = info.value.details()
    assert words in details, details
    assert "0x" not in details and "object at" not in details, details
    assert len(details) < 400, details
    _filtered_search_works(stub)
    got = stub.Get(pb.GetRequest(ids=["good"]))
    assert json.loads(got.items[0].metadata_json) == {"a": 1}


def test_index_images_fails_only_the_bad_items(stub, tiny_bundle) -> None:
    """A bad id, uri or metadata fails its own item; the stream and the batch go on. An id sent in
    two messages of one batch is indexed twice in order (the later replaces the earlier)."""
    _, library = tiny_bundle
    images = [data for _, data in iter_image_bytes(library)][:8]
    requests = [
        pb.IndexImagesRequest(id="ok-1", image=pb.Image(data=images[0])),
        pb.IndexImagesRequest(id="i" * 600, image=pb.Image(data=images[1])),
        pb.IndexImagesRequest(id="nan", image=pb.Image(data=images[2]), metadata_json='{"a": NaN}'),
        pb.IndexImagesRequest(id="deep", image=pb.Image(data=images[3]), metadata_json=_deep(5000)),
        pb.IndexImagesRequest(id="uri", image=pb.Image(data=images[4]), uri="u" * 5000),
        pb.IndexImagesRequest(id="twice", image=pb.Image(data=images[5]), uri="first"),
        pb.IndexImagesRequest(id="twice", image=pb.Image(data=images[6]), uri="second"),
        pb.IndexImagesRequest(id="ok-2", image=pb.Image(data=images[7])),
    ]
    results = list(stub.IndexImages(iter(requests)))
    status = pb.IndexImagesResult
    assert [r.status for r in results] == [
        status.INDEXED,
        status.FAILED,
        status.FAILED,
        status.FAILED,
        status.FAILED,
        status.INDEXED,
        status.INDEXED,
        status.INDEXED,
    ], results
    assert "at most 512" in results[1].error
    assert "NaN" in results[2].error and "deeper than" in results[3].error
    assert "uri of id" in results[4].error
    got = stub.Get(pb.GetRequest(ids=["ok-1", "twice", "ok-2"]))
    assert [i.uri for i in got.items] == ["", "second", ""]
    _filtered_search_works(stub)


def test_sixteen_bit_greyscale_embeds_as_its_grey(stub) -> None:
    """A 16-bit greyscale PNG once decoded as pure white: its embedding must be the 8-bit grey's."""
    grey16 = _png(np.full((40, 40), 128 * 257, np.uint16))
    grey8 = _png(np.full((40, 40, 3), 128, np.uint8))
    white = _png(np.full((40, 40, 3), 255, np.uint8))
    reply = stub.Embed(pb.EmbedRequest(images=[pb.Image(data=d) for d in (grey16, grey8, white)]))
    e16, e8, ew = (np.asarray(e.values) for e in reply.embeddings)
    np.testing.assert_allclose(e16, e8, atol=1e-5)
    assert np.abs(e16 - ew).max() > 1e-3


def test_reflection_v1_and_v1alpha(server) -> None:
    """grpcurl and Postman ask ``grpc.reflection.v1`` first; grpcio-reflection serves v1alpha."""
    from grpc_reflection.v1alpha import reflection_pb2

    _, address = server
    with grpc.insecure_channel(address) as channel:
        for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            call = channel.stream_stream(
                f"/{package}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            replies = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = {s.name for s in replies[0].list_services_response.service}
            assert {"simclr.v1.ImageSearch", "grpc.health.v1.Health"} <= names, package
            assert "grpc.reflection.v1.ServerReflection" in names


def test_old_rows_with_nan_metadata_do_not_break_filters(tmp_path: Path) -> None:
    """A store written before writes were checked may hold NaN: filters skip that row."""
    import sqlite3

    from simclr_search.index.collection import Collection, CollectionConfig
    from simclr_search.index.metadata import NewItem

    col = Collection.create(tmp_path / "c", CollectionConfig(dim=4))
    col.upsert([NewItem("a", np.ones(4, np.float32), metadata={"k": 1})])
    col.upsert([NewItem("b", np.ones(4, np.float32), metadata={"k": 2})])
    with sqlite3.connect(tmp_path / "c" / "meta.sqlite") as conn:
        conn.execute("UPDATE items SET metadata = '{\"k\": NaN}' WHERE external_id = 'b'")
    hits = col.search(np.ones(4, np.float32), 5, ("k", 1))[0]
    assert [h.external_id for h in hits] == ["a"]
    col.close()
