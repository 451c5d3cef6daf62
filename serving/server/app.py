"""Start-up and shutdown of the gRPC server (``simclr serve``).

Order: health NOT_SERVING -> listen -> load bundle and open store -> SERVING. On SIGTERM/SIGINT:
NOT_SERVING -> stop accepting, let in-flight calls finish (grace period) -> snapshot the index ->
exit. Configuration: flags, each with an environment variable (``SIMCLR_<FLAG>``) and a default
that works out of the box.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
from simclr_search.serving.server.settings import ServerOptions, config_from_args

log = logging.getLogger("simclr.serve")
SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["ImageSearch"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


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
        """Graceful: NOT_SERVING first, then finish in-flight calls, then persist the index."""
        await self.begin_shutdown()
        await self.server.stop(self.grace)
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        await self.service.stop()


async def start_server(config: ServiceConfig, options: ServerOptions) -> RunningServer:
    """Listen (NOT_SERVING), load the models and the store, then report SERVING."""
    running = await create_server(config, options)
    try:
        await running.load()
    except BaseException:
        await running.server.stop(0)
        await running.service.stop()  # threads and files of whatever had loaded
        raise
    if options.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(options.metrics_port)
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
    if options.token:
        interceptors.insert(0, AuthInterceptor(options.token))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    service = SearchService(config, on_batch=_observe_batch)
    search_pb2_grpc.add_ImageSearchServicer_to_server(ImageSearchServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, reflection.SERVICE_NAME, health.SERVICE_NAME), server
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if options.tls_cert:
        credentials = grpc.ssl_server_credentials(
            [(Path(options.tls_key).read_bytes(), Path(options.tls_cert).read_bytes())]
        )
        port = server.add_secure_port(options.address, credentials)
    else:
        port = server.add_insecure_port(options.address)
    if port == 0:
        raise OSError(f"cannot listen on {options.address}")
    await server.start()
    running = RunningServer(server, service, health_servicer, port, options.grace_seconds)
    running.limiter = limiter
    return running


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
    await stop.wait()
    log.info("shutting down: finishing in-flight calls, then saving the index")
    await running.stop()


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.log_format == "json":
        from simclr_search.serving.server.logs import use_json_logs

        use_json_logs()
    config, options = config_from_args(args)
    asyncio.run(serve_forever(config, options))
    return 0
