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
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from simclr_search.protos.simclr.v1 import search_pb2, search_pb2_grpc
from simclr_search.serving.core.images import ImageLimits
from simclr_search.serving.core.service import SearchService, ServiceConfig
from simclr_search.serving.server.interceptors import (
    BATCH_SIZE,
    ENCODER_BUSY,
    INDEX_SIZE,
    QUEUE_DEPTH,
    AuthInterceptor,
    LimitAndMetricsInterceptor,
)
from simclr_search.serving.server.servicer import ImageSearchServicer

log = logging.getLogger("simclr.serve")
SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["ImageSearch"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class ServerOptions:
    address: str = "127.0.0.1:50051"
    metrics_port: int = 0
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    max_concurrent: int = 64
    grace_seconds: float = 10.0


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


def _env(name: str, default):
    value = os.environ.get(f"SIMCLR_{name.upper()}")
    if value is None:
        return default
    return (
        type(default)(value)
        if not isinstance(default, bool)
        else value.lower() in {"1", "true", "yes"}
    )


def _auto_or_int(what: str, least: int) -> Callable[[str | int], str | int]:
    """A parser for a flag (or its ``SIMCLR_`` variable) that takes ``auto`` or a whole number of
    at least ``least``; ``what`` says what it must be, for the error."""

    def parse(value: str | int) -> str | int:
        if value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < least:
            raise argparse.ArgumentTypeError(f"{what}, got {value!r}")
        return number

    return parse


_ensemble = _auto_or_int("denoise ensemble must be auto, 1, 2, 4 or 8", 1)
_lanes = _auto_or_int("encoder lanes must be auto or a whole number >= 0", 0)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d, o = ServiceConfig(Path("."), Path(".")), ServerOptions()
    p = argparse.ArgumentParser(
        description="serve embeddings and reverse image search over gRPC", add_help=add_help
    )
    p.add_argument(
        "--bundle", default=_env("bundle", "bundle"), help="model bundle folder (SIMCLR_BUNDLE)"
    )
    p.add_argument("--store", default=_env("store", "store"), help="index folder (SIMCLR_STORE)")
    p.add_argument("--address", default=_env("address", o.address), help="host:port to listen on")
    p.add_argument(
        "--collection", default=_env("collection", d.default_collection), help="default collection"
    )
    p.add_argument("--metric", default=_env("metric", d.metric), choices=["cosine", "ip", "l2"])
    p.add_argument(
        "--int8",
        action="store_true",
        default=_env("int8", False),
        help="use the bundle's INT8 encoder",
    )
    p.add_argument("--device", default=_env("device", d.device), help="auto, cpu or cuda")
    p.add_argument(
        "--max-batch", type=int, default=_env("max_batch", d.max_batch), help="micro-batch size"
    )
    p.add_argument("--max-wait-ms", type=float, default=_env("max_wait_ms", d.max_wait_ms))
    p.add_argument(
        "--ort-threads",
        type=int,
        default=_env("ort_threads", d.ort_threads),
        help="ONNX Runtime intra-op threads per model run",
    )
    p.add_argument(
        "--encoder-streams",
        type=int,
        default=_env("encoder_streams", d.encoder_streams),
        help="batches the encoder runs at once, each on --ort-threads threads",
    )
    p.add_argument(
        "--encoder-lanes",
        type=_lanes,
        default=_env("encoder_lanes", d.encoder_lanes),  # a string: argparse checks it with _lanes
        help="a backlog of more than --max-batch images is split over this many single-threaded"
        " encoder runs side by side (clients that send many images per call); a smaller batch runs"
        " on --ort-threads threads; auto: one per --ort-threads thread on the CPU, none on a GPU",
    )
    p.add_argument("--decode-threads", type=int, default=_env("decode_threads", d.decode_threads))
    p.add_argument(
        "--tie-break-margin",
        type=float,
        default=_env("tie_break_margin", d.tie_break_margin),
        help="search by image: hits scoring within this of the best are ordered by thumbnail"
        " likeness too, so the very copy beats a near-duplicate; 0 turns it off",
    )
    p.add_argument("--faiss-threads", type=int, default=_env("faiss_threads", d.faiss_threads))
    p.add_argument(
        "--denoise-ensemble",
        type=_ensemble,
        choices=["auto", 1, 2, 4, 8],
        default=_ensemble(_env("denoise_ensemble", d.denoise_ensemble)),
        help="Denoise: average this many rotated/flipped passes (more PSNR, proportionally slower);"
        " auto: 4 for images up to half a megapixel, 1 above",
    )
    p.add_argument(
        "--max-denoise-pixels",
        type=int,
        default=_env("max_denoise_pixels", d.max_denoise_pixels),
    )
    p.add_argument("--max-concurrent", type=int, default=_env("max_concurrent", o.max_concurrent))
    p.add_argument(
        "--max-image-bytes", type=int, default=_env("max_image_bytes", ImageLimits().max_bytes)
    )
    p.add_argument(
        "--max-image-pixels", type=int, default=_env("max_image_pixels", ImageLimits().max_pixels)
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env("metrics_port", 9100),
        help="Prometheus; 0 disables",
    )
    p.add_argument(
        "--token", default=_env("token", ""), help="require this bearer token (SIMCLR_TOKEN)"
    )
    p.add_argument("--tls-cert", default=_env("tls_cert", ""))
    p.add_argument("--tls-key", default=_env("tls_key", ""))
    p.add_argument("--grace-seconds", type=float, default=_env("grace_seconds", o.grace_seconds))
    p.add_argument("--log-format", default=_env("log_format", "text"), choices=["text", "json"])
    return p


def config_from_args(args: argparse.Namespace) -> tuple[ServiceConfig, ServerOptions]:
    config = ServiceConfig(
        bundle=Path(args.bundle),
        store=Path(args.store),
        default_collection=args.collection,
        metric=args.metric,
        int8=args.int8,
        device=args.device,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        decode_threads=args.decode_threads,
        ort_threads=args.ort_threads,
        encoder_streams=args.encoder_streams,
        encoder_lanes=args.encoder_lanes,
        faiss_threads=args.faiss_threads,
        denoise_ensemble=args.denoise_ensemble,
        max_denoise_pixels=args.max_denoise_pixels,
        tie_break_margin=args.tie_break_margin,
        limits=ImageLimits(args.max_image_bytes, args.max_image_pixels),
    )
    options = ServerOptions(
        args.address,
        args.metrics_port,
        args.token,
        args.tls_cert,
        args.tls_key,
        args.max_concurrent,
        args.grace_seconds,
    )
    return config, options


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
