"""Every RPC against a real server on a loopback port, through a real stub; bad inputs; lifecycle."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.preprocess import normalize
from simclr_search.bundle.runtime import Encoder
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.protos.simclr.v1 import search_pb2 as pb
from simclr_search.protos.simclr.v1 import search_pb2_grpc as pb_grpc
from simclr_search.serving.client import AsyncClient, Client
from simclr_search.serving.server.app import create_server, start_server
from simclr_search.serving.server.settings import ServerOptions
from tests.serving.conftest import make_config


def _images(library: Path) -> list[bytes]:
    return [data for _, data in iter_image_bytes(library)]


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_rpc(server, tiny_bundle) -> None:
    _, address = server
    _, library = tiny_bundle
    images = _images(library)
    with Client(address) as client:
        info = client.info()
        assert info.embedding_dim == 64 and info.embedding_normalized
        assert info.default_collection == "images" and info.providers == ["CPUExecutionProvider"]
        assert json.loads(info.manifest_json)["format_version"] == 1

        vectors = client.embed(images[:5])
        assert vectors.shape == (5, 64)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

        ids = client.upsert_images([(f"img{i}", data) for i, data in enumerate(images[:20])])
        assert ids == [f"img{i}" for i in range(20)]
        client.upsert_vectors([("vec", vectors[0])])

        hits = client.search(image=images[3], k=3)
        assert hits[0].id == "img3" and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert client.search(vector=vectors[1], k=1)[0].id == "img1"
        more = client.search(id="img2", k=4)
        assert len(more) == 4 and "img2" not in [h.id for h in more]

        stored = client.get(["img4"], include_embeddings=True)[0]
        assert stored.content_sha256 and len(stored.embedding.values) == 64
        assert client.delete(["img4"]) == 1
        assert "img4" not in [h.id for h in client.search(image=images[4], k=25)]

        results = list(
            client.index_images(
                [
                    ("a", images[30], "/lib/a.jpg", {"album": "x"}),
                    ("b", b"not an image", "/lib/b.jpg", {}),
                    ("c", images[3], "/lib/c.jpg", {}),
                    ("d", images[31], "/lib/d.jpg", {"album": "x"}),
                ]
            )
        )
        statuses = {r.id: r.status for r in results}
        assert statuses == {
            "a": pb.IndexImagesResult.INDEXED,
            "b": pb.IndexImagesResult.FAILED,
            "c": pb.IndexImagesResult.SKIPPED_DUPLICATE,
            "d": pb.IndexImagesResult.INDEXED,
        }
        assert "cannot decode" in next(r.error for r in results if r.id == "b")
        filtered = client.search(image=images[0], k=5, filter=("album", "x"))
        assert {h.id for h in filtered} == {"a", "d"}

        assert _code(lambda: client.denoise(images[0])) == grpc.StatusCode.FAILED_PRECONDITION
        request = pb.ReconstructRequest(embedding=pb.Embedding(values=vectors[0].tolist()))
        assert (
            _code(lambda: client.stub.Reconstruct(request)) == grpc.StatusCode.FAILED_PRECONDITION
        )


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("truncated jpeg", "truncated"),
        ("decompression bomb", "bomb"),
        ("zero bytes", b""),
        ("text as an image", b"hello, I am a text file"),
    ],
)
def test_bad_images_are_invalid_argument(server, tiny_bundle, name: str, payload) -> None:
    _, address = server
    _, library = tiny_bundle
    if payload == "truncated":
        payload = next(d for d in _images(library) if d[:2] == b"\xff\xd8")[:100]
    elif payload == "bomb":
        payload = _png(20_000, 20_000, "1")  # 400 Mpx declared in a few kB
    with Client(address) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.embed([payload])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert info.value.details()


def test_small_files_decode_inline_or_in_a_thread_alike(server, tiny_bundle) -> None:
    """A small file decodes on the event loop only under a pixel cap; over it, the thread path."""
    _, address = server
    _, library = tiny_bundle
    small = next(iter(_images(library)))
    big = _png(600, 400, "RGB")  # a few kB that expand past the inline cap
    assert len(big) < 16 * 1024
    with Client(address) as client:
        one = client.embed([small])
        assert one.shape[0] == 1
        np.testing.assert_allclose(client.embed([small, small])[0], one[0], atol=1e-5)
        assert client.embed([big]).shape == one.shape


def test_a_landscape_pictures_vector_pools_the_squares_that_cover_it(server, tiny_bundle) -> None:
    """The sides of a 2:1 picture count: its vector is the mean of its two squares' embeddings
    (computed here with the bundle's encoder directly), stored as Embed returns it."""
    _, address = server
    bundle, _ = tiny_bundle
    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    wide = Image.fromarray(small).resize((96, 48), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    wide.save(buffer, "PNG")
    manifest = load_manifest(bundle)
    size = manifest.input_size
    resized = np.asarray(wide.resize((2 * size, size), Image.BICUBIC, reducing_gap=3.0))
    squares = np.stack([resized[:, :size], resized[:, size:]])
    rows = Encoder(manifest, intra_threads=1)(normalize(squares, manifest.mean, manifest.std))
    expected = rows.astype(np.float64).mean(axis=0)
    expected /= np.linalg.norm(expected)
    with Client(address) as client:
        got = client.embed([buffer.getvalue()])[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert abs(float(rows[0] @ rows[1])) < 0.999  # two different squares, not one twice
        client.upsert_images([("wide", buffer.getvalue())])
        stored = client.get(["wide"], include_embeddings=True)[0]
        np.testing.assert_allclose(np.asarray(stored.embedding.values), got, atol=1e-5)


def test_bad_requests_get_the_right_codes(server, tiny_bundle) -> None:
    _, address = server
    _, library = tiny_bundle
    image = _images(library)[0]
    with Client(address) as client:
        client.upsert_images([("known", image)])
        cases = {
            "wrong embedding dimension": (
                lambda: client.search(vector=np.ones(7), k=1),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "unknown id in search": (
                lambda: client.search(id="nope", k=1),
                grpc.StatusCode.NOT_FOUND,
            ),
            "unknown id in get": (lambda: client.get(["nope"]), grpc.StatusCode.NOT_FOUND),
            "unknown id in delete": (lambda: client.delete(["nope"]), grpc.StatusCode.NOT_FOUND),
            "k of 0": (lambda: client.search(image=image, k=0), grpc.StatusCode.INVALID_ARGUMENT),
            "k of 10^9": (
                lambda: client.search(image=image, k=10**9),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "unknown collection": (
                lambda: client.search(image=image, k=1, collection="other"),
                grpc.StatusCode.NOT_FOUND,
            ),
            "no query": (
                lambda: client.stub.Search(pb.SearchRequest(k=1)),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "bad metadata": (
                lambda: client.stub.Upsert(
                    pb.UpsertRequest(
                        items=[
                            pb.UpsertItem(
                                id="x", image=pb.Image(data=image), metadata_json="[1, 2]"
                            )
                        ]
                    )
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            "empty embed": (lambda: client.embed([]), grpc.StatusCode.INVALID_ARGUMENT),
        }
        for name, (call, expected) in cases.items():
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == expected, name
            assert info.value.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
        assert client.delete(["nope", "known"], ignore_missing=True) == 1


def test_embed_stream_answers_each_request_in_order_and_a_bad_one_ends_it(
    server, tiny_bundle
) -> None:
    _, address = server
    _, library = tiny_bundle
    images = _images(library)[:6]
    with Client(address) as client:
        expected = client.embed(images)
        requests = [images[:1], images[1:4], images[4:6]]
        got = list(client.embed_stream(iter(requests)))
        assert [g.shape for g in got] == [(1, 64), (3, 64), (2, 64)]
        np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-5)
        answered: list[np.ndarray] = []
        with pytest.raises(grpc.RpcError) as info:
            for vectors in client.embed_stream(iter([images[:1], [b"not an image"], images[:1]])):
                answered.append(vectors)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "image" in info.value.details() and len(answered) == 1

    async def run_async() -> tuple[np.ndarray, grpc.StatusCode]:
        async with AsyncClient(address) as aclient:
            async with aclient.embed_stream() as stream:
                first = await stream.embed(images[:2])
                second = await stream.embed(images[2:3])
                for image in images:  # all written before any is read: answered in order
                    await stream.send([image])
                ahead = [await stream.receive() for _ in images]
            np.testing.assert_allclose(np.concatenate(ahead), expected, atol=1e-5)
            bad = aclient.embed_stream()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await bad.embed([b""])
            await bad.close()  # closing a failed stream is harmless
            return np.concatenate([first, second]), failed.value.code()

    vectors, code = asyncio.run(run_async())
    np.testing.assert_allclose(vectors, expected[:3], atol=1e-5)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_deadline_exceeded(server, tiny_bundle) -> None:
    _, address = server
    _, library = tiny_bundle
    images = _images(library) * 5
    with Client(address, timeout=0.001) as client:
        assert _code(lambda: client.embed(images)) == grpc.StatusCode.DEADLINE_EXCEEDED
        stream = client.embed_stream(iter([images] * 50), timeout=0.05)
        assert _code(lambda: list(stream)) == grpc.StatusCode.DEADLINE_EXCEEDED
    with Client(address) as client:  # the server is fine afterwards
        assert client.embed(images[:1]).shape == (1, 64)


def test_auth_on_and_off(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    bundle, library = tiny_bundle
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0, token="s3cret"),
        )
    )
    address = f"127.0.0.1:{running.port}"
    image = _images(library)[0]
    try:
        with Client(address) as anonymous:
            with pytest.raises(grpc.RpcError) as info:
                anonymous.embed([image])
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in info.value.details()
            health = health_pb2_grpc.HealthStub(anonymous.channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest()).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        with Client(address, token="wrong") as wrong:
            assert _code(lambda: wrong.embed([image])) == grpc.StatusCode.UNAUTHENTICATED
        with Client(address, token="s3cret") as client:
            assert client.embed([image]).shape == (1, 64)
    finally:
        loop_thread.run(running.stop())


def test_health_transitions(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    bundle, _ = tiny_bundle
    running = loop_thread.run(
        create_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    health = health_pb2_grpc.HealthStub(channel)
    search = pb_grpc.ImageSearchStub(channel)
    statuses = health_pb2.HealthCheckResponse
    try:
        assert health.Check(health_pb2.HealthCheckRequest()).status == statuses.NOT_SERVING
        assert _code(lambda: search.GetInfo(pb.GetInfoRequest())) == grpc.StatusCode.UNAVAILABLE
        loop_thread.run(running.load())
        assert (
            health.Check(health_pb2.HealthCheckRequest(service="simclr.v1.ImageSearch")).status
            == statuses.SERVING
        )
        loop_thread.run(running.begin_shutdown())
        assert health.Check(health_pb2.HealthCheckRequest()).status == statuses.NOT_SERVING
    finally:
        channel.close()
        loop_thread.run(running.stop())


def test_missing_bundle_never_serves(tmp_path: Path, loop_thread) -> None:
    from simclr_search.bundle.manifest import BundleError

    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        loop_thread.run(
            start_server(
                make_config(tmp_path / "no-bundle", tmp_path / "store"),
                ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
            )
        )


def test_restart_keeps_the_index(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    bundle, library = tiny_bundle
    images = _images(library)
    config = make_config(bundle, tmp_path / "store")
    running = loop_thread.run(
        start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    with Client(f"127.0.0.1:{running.port}") as client:
        client.upsert_images([(f"img{i}", data) for i, data in enumerate(images[:10])])
    loop_thread.run(running.stop())
    running = loop_thread.run(
        start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            assert client.info().collections[0].count == 10
            assert client.search(image=images[6], k=1)[0].id == "img6"
    finally:
        loop_thread.run(running.stop())


def test_a_store_refuses_another_models_bundle(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    """Same dimension, different model: its vectors are not comparable, so the server will not start."""
    import shutil

    import onnx

    from simclr_search.bundle.manifest import BundleSpec, load_manifest, write_manifest
    from simclr_search.index.errors import IncompatibleSpace

    bundle, library = tiny_bundle
    config = make_config(bundle, tmp_path / "store")
    running = loop_thread.run(
        start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    with Client(f"127.0.0.1:{running.port}") as client:
        client.upsert_images([("img0", _images(library)[0])])
    loop_thread.run(running.stop())
    other = tmp_path / "other-bundle"
    shutil.copytree(bundle, other)
    encoder = onnx.load(str(other / "encoder.onnx"))
    encoder.doc_string = "retrained"  # another file: another encoder as far as anyone can tell
    onnx.save(encoder, str(other / "encoder.onnx"))
    data = load_manifest(other, verify_checksums=False).data
    write_manifest(other, BundleSpec.from_dict(data))
    new = load_manifest(other).embedding_space
    with pytest.raises(IncompatibleSpace, match=f"holds vectors of .*, not of '{new}'"):
        loop_thread.run(
            start_server(
                make_config(other, config.store),
                ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
            )
        )
    running = loop_thread.run(
        start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    try:  # the original bundle still serves the store, which lost nothing
        with Client(f"127.0.0.1:{running.port}") as client:
            assert client.info().collections[0].count == 1
    finally:
        loop_thread.run(running.stop())


def test_concurrent_upsert_and_search(server, tiny_bundle) -> None:
    _, address = server
    _, library = tiny_bundle
    images = _images(library)
    errors: list[BaseException] = []
    with Client(address) as client:
        client.upsert_images([("seed", images[0])])

        def writer(offset: int) -> None:
            try:
                for i in range(offset, len(images), 3):
                    client.upsert_images([(f"w{i}", images[i])])
            except BaseException as exc:
                errors.append(exc)

        def reader() -> None:
            try:
                for i in range(30):
                    assert client.search(image=images[i % len(images)], k=5)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(o,)) for o in range(3)]
        threads += [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        assert client.info().collections[0].count == len(images) + 1


def test_concurrency_limit_is_resource_exhausted(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    bundle, library = tiny_bundle
    image = _images(library)[0]
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0, max_concurrent=1),
        )
    )
    release = threading.Event()
    try:
        with Client(f"127.0.0.1:{running.port}") as client:

            def slow_stream():
                yield pb.IndexImagesRequest(id="held", image=pb.Image(data=image))
                release.wait(30)  # keeps the one allowed call open

            stream = client.stub.IndexImages(slow_stream())
            deadline = time.monotonic() + 30
            while running.server_in_flight() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # until the stream is being served
            with pytest.raises(grpc.RpcError) as info:
                client.embed([image])
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            list(stream)
            assert client.embed([image]).shape == (1, 64)
    finally:
        release.set()
        loop_thread.run(running.stop())


def test_prometheus_metrics_count_requests_by_method_and_code(
    tiny_bundle, tmp_path: Path, loop_thread
) -> None:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bundle, library = tiny_bundle
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=port, http_port=0),
        )
    )
    try:
        from prometheus_client import REGISTRY

        def sample(name: str) -> float:  # the registry is per process: other tests count too
            return REGISTRY.get_sample_value(name) or 0.0

        busy_before = sample("simclr_encoder_busy_seconds_total")
        rows_before = sample("simclr_inference_batch_size_sum")
        with Client(f"127.0.0.1:{running.port}") as client:
            client.embed(_images(library)[:2])
            _code(lambda: client.get(["missing"]))
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        assert 'simclr_requests_total{code="OK",method="Embed"}' in text
        assert 'simclr_requests_total{code="NOT_FOUND",method="Get"}' in text
        assert "simclr_request_seconds_bucket" in text
        # The encoder's busy time and batch sizes, counted as each batch ends (the 2 images).
        busy = re.search(r"^simclr_encoder_busy_seconds_total (\S+)$", text, re.M)
        assert busy is not None and float(busy.group(1)) > busy_before, text
        rows = re.search(r"^simclr_inference_batch_size_sum (\S+)$", text, re.M)
        assert rows is not None and float(rows.group(1)) == rows_before + 2, text
    finally:
        loop_thread.run(running.stop())


def test_json_log_lines() -> None:
    import logging

    from simclr_search.serving.server.logs import JsonFormatter

    record = logging.LogRecord(
        "simclr.serve", logging.INFO, __file__, 1, "ready on %d", (50051,), None
    )
    line = json.loads(JsonFormatter().format(record))
    assert (
        line["message"] == "ready on 50051" and line["level"] == "INFO" and line["ts"].endswith("Z")
    )
