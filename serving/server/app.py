"""Start-up and shutdown of the gRPC server (``simclr serve``).

Order: health NOT_SERVING -> listen (gRPC, then metrics) -> load bundle and open store -> SERVING.
On SIGTERM/SIGINT: NOT_SERVING -> stop accepting, let in-flight calls finish (up to the grace
period; open health watches do not count and are ended once the calls are done) -> snapshot the
index -> exit. A start-up failure (port taken, store not writable, bad bundle) is one line on
stderr and exit status 1. Configuration: flags, each with an environment variable (``SIMCLR_<FLAG>``) and a default
that works out of the box.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from simclr_search.bundle.manifest import BundleError
from simclr_search.index.errors import StoreError
from simclr_search.protos.simclr.v1 import search_pb2, search_pb2_grpc
from simclr_search.serving.core.config import ServiceConfig
from simclr_search.serving.core.service import SearchService
from simclr_search.serving.server.interceptors import (
    BATCH_SIZE,
    ENCODER_BUSY,
    INDEX_SIZE,
    QUEUE_DEPTH,
    AuthInterceptor,
    LimitAndMetricsInterceptor,
)
from simclr_search.serving.server.servicer import ImageSearchServicer
from simclr_search.serving.server.settings import (
    ServerOptions,
    bearer_token,
    config_from_args,
    host_of,
)

log = logging.getLogger("simclr.serve")
SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["ImageSearch"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class StartupError(Exception):
    """The server could not start; the message says what to change."""


class RunningServer:
    """A started server; ``port`` is the bound port (useful with port 0 in tests)."""

    def __init__(
        self,
        server: grpc.aio.Server,
        service: SearchService,
        health_servicer,
        port: int,
        grace: float,
    ):
        self.server, self.service, self.health, self.port, self.grace = (
            server,
            service,
            health_servicer,
            port,
            grace,
        )
        self._metrics_task: asyncio.Task | None = None
        self._metrics_server = None
        self.http = None  # serving.http.listener.HttpListener, when --http is on

    @property
    def http_port(self) -> int:
        """The HTTP/JSON port (0 when HTTP is off)."""
        return self.http.port if self.http is not None else 0

    def server_in_flight(self) -> int:
        """RPCs being served now (health and reflection excluded)."""
        return self.limiter.in_flight

    async def load(self) -> None:
        """Load the bundle and open the store, then report SERVING."""
        await self.service.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def begin_shutdown(self) -> None:
        """Report NOT_SERVING so load balancers stop sending new calls."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self) -> None:
        """Graceful: NOT_SERVING first, then finish in-flight calls, then persist the index.

        ``grpc.aio.Server.stop(grace)`` waits for every open call, and a health ``Watch`` stream
        (what Kubernetes probes and load balancers hold open) never ends by itself: it would hold
        shutdown for the whole grace period. So we wait for our own calls only (the interceptor
        counts them; health and reflection excluded), then end the rest at once.
        """
        await self.begin_shutdown()
        if self.http is not None:
            await self.http.stop_accepting()
        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(self.server.stop(self.grace))
        deadline = loop.time() + self.grace
        while self.limiter.in_flight > 0 and loop.time() < deadline and not stopping.done():
            await asyncio.sleep(0.02)
        if not stopping.done():
            await self.server.stop(0)  # the most restrictive grace wins: ends watches now
        await stopping
        if self.http is not None:
            await self.http.close()
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        await self.service.stop()


async def start_server(config: ServiceConfig, options: ServerOptions) -> RunningServer:
    """Listen (NOT_SERVING), load the models and the store, then report SERVING."""
    running = await create_server(config, options)
    try:
        if options.metrics_port:
            running._metrics_server = _start_metrics(options)
        await running.load()
    except BaseException:
        await running.server.stop(0)
        if running.http is not None:
            await running.http.close()
        if running._metrics_server is not None:
            running._metrics_server.server_close()
        await running.service.stop()  # threads and files of whatever had loaded
        raise
    if running._metrics_server is not None:
        running._metrics_task = asyncio.get_running_loop().create_task(
            _export_gauges(running.service)
        )
    log.info(
        "serving simclr.v1.ImageSearch on %s (port %d)%s",
        options.address,
        running.port,
        ", TLS" if options.tls_cert else "",
    )
    return running


async def create_server(config: ServiceConfig, options: ServerOptions) -> RunningServer:
    """A listening server that answers health checks with NOT_SERVING until :meth:`RunningServer.load`."""
    limiter = LimitAndMetricsInterceptor(options.max_concurrent)
    interceptors: list[grpc.aio.ServerInterceptor] = [limiter]
    token = bearer_token(options)
    if token:
        interceptors.insert(0, AuthInterceptor(token))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    service = SearchService(config, on_batch=_observe_batch)
    servicer = ImageSearchServicer(service)
    search_pb2_grpc.add_ImageSearchServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(server)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        if options.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(Path(options.tls_key).read_bytes(), Path(options.tls_cert).read_bytes())]
            )
            port = server.add_secure_port(options.address, credentials)
        else:
            port = server.add_insecure_port(options.address)
    except RuntimeError:  # grpc raises this when the port cannot be bound
        port = 0
    if port == 0:
        raise StartupError(
            f"cannot listen for gRPC on {options.address} (in use, or not an address of this "
            "machine); choose another --address"
        )
    await server.start()
    running = RunningServer(server, service, health_servicer, port, options.grace_seconds)
    running.limiter = limiter
    if options.http:
        try:
            running.http = await _start_http(servicer, limiter, token, options)
        except BaseException:
            await server.stop(0)
            raise
    return running


async def _start_http(servicer, limiter, token: str, options: ServerOptions):
    """The HTTP/JSON API and web page on the gRPC host (``serving/http``)."""
    from simclr_search.serving.http.gateway import Gateway
    from simclr_search.serving.http.listener import start_http

    host = host_of(options.address)
    try:
        return await start_http(
            Gateway(servicer, limiter, token),
            host,
            options.http_port,
            options.tls_cert,
            options.tls_key,
        )
    except OSError as exc:
        raise StartupError(
            f"cannot serve HTTP on {host}:{options.http_port}: {exc.strerror or exc}; choose "
            "another --http-port (--no-http turns it off)"
        ) from exc


def _enable_reflection(server: grpc.aio.Server) -> None:
    """Server reflection under both names clients ask for: ``v1alpha`` (grpcio-reflection's) and
    ``v1`` (what grpcurl and Postman try first). The two protos are the same messages in another
    package, so one servicer answers both, the v1 method registered with v1alpha's codecs."""
    names = (SERVICE_NAME, REFLECTION_V1, reflection.SERVICE_NAME, health.SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )


def _start_metrics(options: ServerOptions):
    """Prometheus ``/metrics`` on ``--metrics-host`` (default: the gRPC host) and
    ``--metrics-port``; a taken port is a :class:`StartupError` that names it."""
    from prometheus_client import start_http_server

    host = options.metrics_host or host_of(options.address) or "0.0.0.0"
    try:
        metrics_server, _ = start_http_server(options.metrics_port, addr=host)
    except OSError as exc:
        raise StartupError(
            f"cannot serve metrics on {host}:{options.metrics_port}: {exc.strerror or exc}; "
            "choose another --metrics-port (0 turns metrics off)"
        ) from exc
    return metrics_server


def _observe_batch(rows: int, seconds: float) -> None:
    BATCH_SIZE.observe(rows)
    ENCODER_BUSY.inc(seconds)


async def _export_gauges(service: SearchService) -> None:
    while True:
        QUEUE_DEPTH.set(service.batcher.queue_depth if service.batcher else 0)
        if service.store is not None:
            for name in service.store.list():
                INDEX_SIZE.labels(name).set(service.store.get(name).count())
        await asyncio.sleep(1.0)


async def serve_forever(config: ServiceConfig, options: ServerOptions) -> None:
    running = await start_server(config, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"simclr serve: listening on port {running.port}", flush=True)
    if running.http is not None:
        host = host_of(options.address) or "127.0.0.1"
        print(f"simclr serve: HTTP/JSON and the web page on http://{host}:{running.http_port}/")
    await stop.wait()
    log.info("shutting down: finishing in-flight calls, then saving the index")
    await running.stop()


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.log_format == "json":
        from simclr_search.serving.server.logs import use_json_logs

        use_json_logs()
    config, options = config_from_args(args)
    try:
        asyncio.run(serve_forever(config, options))
    except (StartupError, StoreError, BundleError, OSError) as exc:
        print(f"simclr serve: cannot start: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    """The error and what it was about, on one line (an OSError names its file)."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return " ".join(str(exc).split()) or type(exc).__name__
