"""What the server exposes and how it stops: the metrics listener follows the gRPC host, a taken
port is named, start-up failures are one line, bearer tokens as RFC 6750 says, token files, and a
health Watch that does not hold SIGTERM shutdown for the grace period."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.serving.client import Client
from simclr_search.serving.server.app import StartupError, start_server
from simclr_search.serving.server.interceptors import bearer_credentials
from simclr_search.serving.server.settings import (
    ServerOptions,
    bearer_token,
    config_from_args,
    get_args_parser,
    host_of,
)
from tests.serving.conftest import make_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_defaults_keep_metrics_off_node_exporters_port_and_give_calls_time() -> None:
    _, options = config_from_args(get_args_parser().parse_args([]))
    assert options.metrics_port not in (0, 9100) and options.metrics_host == ""
    assert options.grace_seconds >= 30  # a 6 MP Denoise takes ~16 s on 2 cores
    assert host_of("127.0.0.1:50051") == "127.0.0.1"
    assert host_of("[::1]:50051") == "::1" and host_of("[::]:0") == "::"


def test_metrics_listen_on_the_grpc_host_only(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    bundle, _ = tiny_bundle
    port = _free_port()
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=port, http_port=0),
        )
    )
    try:
        assert running._metrics_server.server_address[0] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        loop_thread.run(running.stop())
    with pytest.raises(OSError):  # closed with the server
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_taken_metrics_port_is_named(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    bundle, _ = tiny_bundle
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=rf"metrics on 127\.0\.0\.1:{port}.*--metrics-port"):
            loop_thread.run(
                start_server(
                    make_config(bundle, tmp_path / "store"),
                    ServerOptions(address="127.0.0.1:0", metrics_port=port, http_port=0),
                )
            )


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simclr_search.cli.main", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("case", ["metrics port taken", "store not writable", "grpc port taken"])
def test_start_up_failures_are_one_line(tiny_bundle, tmp_path: Path, case: str) -> None:
    bundle, _ = tiny_bundle
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--bundle", str(bundle), "--store", str(tmp_path / "store")]
        args += ["--address", "127.0.0.1:0", "--metrics-port", "0"]
        if case == "metrics port taken":
            args += ["--metrics-port", str(port)]
        elif case == "grpc port taken":
            args += ["--address", f"127.0.0.1:{port}"]
        else:  # a store path below a file: no user (root included) can create it
            (tmp_path / "file").write_text("")
            args += ["--store", str(tmp_path / "file" / "store")]
        done = _serve(args)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if case != "store not writable":
        assert str(port) in errors[0]


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_credentials("Bearer abc") == b"abc"
    assert bearer_credentials("bearer abc") == b"abc"
    assert bearer_credentials("BEARER  abc ") == b"abc"
    assert bearer_credentials("Basic abc") == b""
    assert bearer_credentials("abc") == b""


def test_token_file_and_lower_case_scheme(tiny_bundle, tmp_path: Path, loop_thread) -> None:
    bundle, library = tiny_bundle
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    assert bearer_token(ServerOptions(token_file=str(token_file))) == "s3cret"
    with pytest.raises(ValueError, match="not both"):
        bearer_token(ServerOptions(token="a", token_file=str(token_file)))
    with pytest.raises(ValueError, match="cannot read"):
        bearer_token(ServerOptions(token_file=str(tmp_path / "missing")))
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(
                address="127.0.0.1:0", metrics_port=0, http_port=0, token_file=str(token_file)
            ),
        )
    )
    image = next(data for _, data in iter_image_bytes(library))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            from simclr_search.protos.simclr.v1 import search_pb2 as pb
            from simclr_search.protos.simclr.v1 import search_pb2_grpc as pb_grpc

            stub = pb_grpc.ImageSearchStub(channel)
            request = pb.EmbedRequest(images=[pb.Image(data=image)])
            reply = stub.Embed(request, metadata=[("authorization", "bearer s3cret")])
            assert len(reply.embeddings) == 1
            with pytest.raises(grpc.RpcError) as info:
                stub.Embed(request, metadata=[("authorization", "Basic s3cret")])
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with Client(f"127.0.0.1:{running.port}", token="s3cret") as client:
            assert client.embed([image]).shape == (1, 64)
    finally:
        loop_thread.run(running.stop())


def test_an_open_health_watch_does_not_hold_shutdown(
    tiny_bundle, tmp_path: Path, loop_thread
) -> None:
    """Shutdown waits for real calls (up to the grace), not for a Watch stream, which never ends:
    an IndexImages stream still sending when SIGTERM comes is finished and answered in full."""
    from simclr_search.protos.simclr.v1 import search_pb2 as pb
    from simclr_search.protos.simclr.v1 import search_pb2_grpc as pb_grpc

    bundle, library = tiny_bundle
    images = [data for _, data in iter_image_bytes(library)][:2]
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0, grace_seconds=30),
        )
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    seen: list[int] = []
    indexed: list[pb.IndexImagesResult] = []
    first_sent = threading.Event()

    def follow() -> None:
        try:
            for reply in watch:
                seen.append(reply.status)
        except grpc.RpcError:
            pass

    def slow_requests():
        yield pb.IndexImagesRequest(id="a", image=pb.Image(data=images[0]))
        first_sent.set()
        time.sleep(1.5)  # still sending when shutdown begins
        yield pb.IndexImagesRequest(id="b", image=pb.Image(data=images[1]))

    def index() -> None:
        indexed.extend(pb_grpc.ImageSearchStub(channel).IndexImages(slow_requests()))

    threads = [threading.Thread(target=f, daemon=True) for f in (follow, index)]
    for thread in threads:
        thread.start()
    try:
        assert first_sent.wait(10)
        time.sleep(0.3)
        start = time.perf_counter()
        loop_thread.run(running.stop())
        elapsed = time.perf_counter() - start
        threads[1].join(10)
    finally:
        channel.close()
    threads[0].join(10)
    assert [r.id for r in indexed] == ["a", "b"], indexed
    assert elapsed < 10, f"shutdown took {elapsed:.1f} s with a 30 s grace"
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen  # the watcher was told first
