"""Server interceptors: bearer-token auth, a concurrency limit, and Prometheus request metrics.

Each wraps the RPC handler (unary or streaming) so the check runs before the method and the
bookkeeping after it, whatever the outcome. Health checks and reflection bypass auth and the limit:
an orchestrator must always be able to ask whether the server is up.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

import grpc
from prometheus_client import Counter, Gauge, Histogram

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

REQUESTS = Counter("simclr_requests_total", "RPCs by method and status code", ["method", "code"])
LATENCY = Histogram(
    "simclr_request_seconds",
    "RPC latency by method",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("simclr_in_flight_requests", "RPCs being served")
BATCH_SIZE = Histogram(
    "simclr_inference_batch_size",
    "images per micro-batch (one ONNX Runtime call, or split over the encoder lanes when more "
    "than --max-batch)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
ENCODER_BUSY = Counter(
    "simclr_encoder_busy_seconds",
    "seconds the encoder spent running batches; its rate is the encoder's utilisation "
    "(several with encoder lanes)",
)
QUEUE_DEPTH = Gauge("simclr_inference_queue_depth", "requests waiting for the micro-batcher")
INDEX_SIZE = Gauge("simclr_index_items", "items in a collection", ["collection"])


def _abort_handler(
    code: grpc.StatusCode, message: str, like: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    async def unary(request, context):
        await context.abort(code, message)

    async def streaming(request_iterator, context):
        await context.abort(code, message)
        yield  # pragma: no cover  (makes this an async generator)

    async def answers(request, context):
        await context.abort(code, message)
        yield  # pragma: no cover

    if like.response_streaming and not like.request_streaming:
        return grpc.unary_stream_rpc_method_handler(
            answers,
            request_deserializer=like.request_deserializer,
            response_serializer=like.response_serializer,
        )
    if like.request_streaming or like.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            streaming,
            request_deserializer=like.request_deserializer,
            response_serializer=like.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=like.request_deserializer,
        response_serializer=like.response_serializer,
    )


def _wrap(
    handler: grpc.RpcMethodHandler,
    before: Callable[[], None],
    after: Callable[[grpc.aio.ServicerContext, float], None],
):
    """Call ``before()`` when the RPC starts and ``after(context, seconds)`` when it ends, however it ends."""
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary(request, context):
            before()
            start = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                after(context, time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_answers = handler.unary_stream

        async def answering(request, context):
            before()
            start = time.perf_counter()
            try:
                async for response in inner_answers(request, context):
                    yield response
            finally:
                after(context, time.perf_counter() - start)

        return grpc.unary_stream_rpc_method_handler(
            answering,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        inner_stream = handler.stream_stream

        async def streaming(request_iterator, context):
            before()
            start = time.perf_counter()
            try:
                async for response in inner_stream(request_iterator, context):
                    yield response
            finally:
                after(context, time.perf_counter() - start)

        return grpc.stream_stream_rpc_method_handler(
            streaming,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def bearer_credentials(header: str | bytes) -> bytes:
    """The token of an ``authorization`` value ``Bearer <token>``; the scheme is case-insensitive
    (RFC 6750 section 2.1 via RFC 7235), b"" for any other scheme."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip().encode() if scheme.lower() == "bearer" else b""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` metadata; UNAUTHENTICATED otherwise."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        given = bearer_credentials(dict(details.invocation_metadata or ()).get("authorization", ""))
        if not given or not hmac.compare_digest(given, self._expected):
            return _abort_handler(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'",
                handler,
            )
        return handler


class LimitAndMetricsInterceptor(grpc.aio.ServerInterceptor):
    """At most ``max_concurrent`` RPCs at once (RESOURCE_EXHAUSTED beyond); counts and times each RPC.

    The wrapped handler of each method is built once and reused: building one per call (and gRPC
    inspecting the new functions each time) cost ~10 us of the event loop per call (alternating
    runs of 32 one-image clients), the thread that every call's messages share.
    """

    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        # id(handler) -> (handler, wrapped); the handler is kept so that its id is never reused.
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if self.in_flight >= self.max_concurrent:
            REQUESTS.labels(method.rsplit("/", 1)[-1], "RESOURCE_EXHAUSTED").inc()
            return _abort_handler(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server is at its limit of {self.max_concurrent} concurrent calls; retry with backoff",
                handler,
            )
        cached = self._wrapped.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._metered(handler, method.rsplit("/", 1)[-1])
        if len(self._wrapped) < 1024:  # a bound, should a handler ever be built per call
            self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _metered(self, handler: grpc.RpcMethodHandler, name: str) -> grpc.RpcMethodHandler:
        latency = LATENCY.labels(name)

        def before() -> None:
            self.in_flight += 1
            IN_FLIGHT.set(self.in_flight)

        def after(context: grpc.aio.ServicerContext, seconds: float) -> None:
            self.in_flight -= 1
            IN_FLIGHT.set(self.in_flight)
            code = context.code() or grpc.StatusCode.OK
            REQUESTS.labels(
                name, code.name if isinstance(code, grpc.StatusCode) else str(code)
            ).inc()
            latency.observe(seconds)

        return _wrap(handler, before, after)
