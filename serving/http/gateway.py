"""HTTP/JSON beside gRPC, from the same process and the same servicer.

Every RPC of ``simclr.v1.ImageSearch`` is ``POST /simclr.v1.ImageSearch/<Method>``, the path gRPC
and the Connect protocol use, with the message in the protobuf JSON mapping (``json_format``:
bytes as base64, field names as in the .proto or in lowerCamelCase). Unary calls answer one JSON
object. Streaming calls speak newline-delimited JSON (``application/x-ndjson``): a client-streaming
body is one message per line, and a server-streaming answer is one message per line. Errors are
``{"code": "NOT_FOUND", "message": "..."}`` with the HTTP status of Google's mapping of the gRPC
code (``google/rpc/code.proto``); an error after a stream's first line is its last line, as
``{"error": {...}}``.

The calls go through :class:`~simclr_search.serving.server.servicer.ImageSearchServicer` itself,
with a context whose ``abort`` raises, so messages, validation and the error mapping are gRPC's.
The same bearer token is required (``Authorization: Bearer <token>``), the same concurrency limit
and the same Prometheus metrics apply (``serving/server/interceptors.py``). ``/`` serves the web
page (``serving/http/page``), ``/openapi.json`` the schema (``docs/openapi.json``, made by
``scripts/gen_openapi.py`` and checked for staleness by a test).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf import json_format

from simclr_search.protos.simclr.v1 import search_pb2 as pb
from simclr_search.serving.http.files import item_image
from simclr_search.serving.server.interceptors import (
    IN_FLIGHT,
    LATENCY,
    REQUESTS,
    LimitAndMetricsInterceptor,
    bearer_credentials,
)
from simclr_search.serving.server.servicer import ImageSearchServicer

SERVICE = pb.DESCRIPTOR.services_by_name["ImageSearch"]
PREFIX = f"/{SERVICE.full_name}/"
PAGE = Path(__file__).resolve().parent / "page"
OPENAPI = Path(__file__).resolve().parent / "openapi.json"
NDJSON = "application/x-ndjson"
MAX_BODY_BYTES = 64 * 1024 * 1024

#: gRPC code -> HTTP status (google/rpc/code.proto's mapping).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class CallError(grpc.aio.AbortError):
    """A call ended with ``code``; raised by :class:`_Context.abort` and by the gateway itself
    (an ``AbortError``, so the servicer passes it on as it does a gRPC abort)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Context:
    """The part of ``grpc.aio.ServicerContext`` the servicer uses."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise CallError(code, details)


def error_body(code: grpc.StatusCode, message: str) -> dict:
    return {"code": code.name, "message": message}


def _error(code: grpc.StatusCode, message: str) -> web.Response:
    response = web.json_response(error_body(code, message), status=HTTP_STATUS[code])
    response.grpc_code = code.name  # for the metrics: several codes share an HTTP status
    return response


def to_json(message) -> dict:
    """A response message as JSON: the .proto's field names, zero values included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _parse(text: str | bytes, message_type):
    try:
        return json_format.Parse(text or "{}", message_type())
    except json_format.ParseError as exc:
        raise CallError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the body is not a {message_type.DESCRIPTOR.full_name} in JSON: {exc}",
        ) from exc


class Gateway:
    """The HTTP application.

    Args:
        servicer: the gRPC servicer whose methods answer the calls.
        limiter: the gRPC server's limit-and-metrics interceptor (one limit for both protocols).
        token: the bearer token the server requires ("" for none).
    """

    def __init__(
        self, servicer: ImageSearchServicer, limiter: LimitAndMetricsInterceptor, token: str
    ) -> None:
        self.servicer = servicer
        self.limiter = limiter
        self._token = token.encode()
        self.app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        self.app.router.add_post(PREFIX + "{method}", self._call)
        self.app.router.add_post("/v1/search", self._upload_search)
        self.app.router.add_get("/v1/image", self._image)
        self.app.router.add_get("/openapi.json", self._openapi)
        self.app.router.add_get("/", self._page)
        self.app.router.add_static("/page/", PAGE, show_index=False)

    # -- auth, limit, metrics ------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.method == "GET" and not request.path.startswith("/v1/"):
            return await handler(request)  # the page and the schema: no data, no token
        name = request.match_info.get("method") or request.path.rsplit("/", 1)[-1]
        if self._token:
            given = bearer_credentials(request.headers.get("Authorization", ""))
            if not given or not hmac.compare_digest(given, self._token):
                return self._count(
                    name,
                    _error(
                        grpc.StatusCode.UNAUTHENTICATED,
                        "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                    ),
                )
        if self.limiter.in_flight >= self.limiter.max_concurrent:
            return self._count(
                name,
                _error(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server is at its limit of {self.limiter.max_concurrent} concurrent calls; "
                    "retry with backoff",
                ),
            )
        self.limiter.in_flight += 1
        IN_FLIGHT.set(self.limiter.in_flight)
        started = time.perf_counter()
        try:
            response = await handler(request)
        finally:
            self.limiter.in_flight -= 1
            IN_FLIGHT.set(self.limiter.in_flight)
        LATENCY.labels(name).observe(time.perf_counter() - started)
        return self._count(name, response)

    @staticmethod
    def _count(name: str, response: web.StreamResponse) -> web.StreamResponse:
        code = getattr(response, "grpc_code", None) or (
            "OK" if response.status < 400 else "UNKNOWN"
        )
        REQUESTS.labels(name, code).inc()
        return response

    # -- the RPCs ------------------------------------------------------------------------------
    async def _call(self, request: web.Request) -> web.StreamResponse:
        method = SERVICE.methods_by_name.get(request.match_info["method"])
        if method is None:
            known = ", ".join(m.name for m in SERVICE.methods)
            return _error(
                grpc.StatusCode.UNIMPLEMENTED,
                f"no method {request.match_info['method']!r}; {SERVICE.full_name} has {known}",
            )
        request_type = pb.__dict__[method.input_type.name]
        try:
            if method.client_streaming:
                body = _messages(request, request_type)
            else:
                body = _parse(await request.read(), request_type)
            call = getattr(self.servicer, method.name)
            if method.server_streaming:
                return await self._stream(request, call(body, _Context()))
            return web.json_response(to_json(await call(body, _Context())))
        except CallError as exc:
            return _error(exc.code, exc.message)
        except web.HTTPRequestEntityTooLarge:
            return _error(
                grpc.StatusCode.INVALID_ARGUMENT, f"the body is over {MAX_BODY_BYTES} bytes"
            )

    async def _stream(self, request: web.Request, answers: AsyncIterator) -> web.StreamResponse:
        """NDJSON out; an error before the first answer keeps its HTTP status."""
        iterator = answers.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        if first is not None:
            await response.write(json.dumps(to_json(first)).encode() + b"\n")
            try:
                async for answer in iterator:
                    await response.write(json.dumps(to_json(answer)).encode() + b"\n")
            except CallError as exc:
                line = {"error": error_body(exc.code, exc.message)}
                await response.write(json.dumps(line).encode() + b"\n")
                response.grpc_code = exc.code.name
        await response.write_eof()
        return response

    async def _upload_search(self, request: web.Request) -> web.Response:
        """``multipart/form-data`` Search for curl and forms: ``image`` (a file), ``k``,
        ``collection``; the answer is Search's."""
        try:
            form = await request.post()
        except ValueError as exc:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, f"not a multipart form: {exc}")
        image = form.get("image")
        if image is None or not hasattr(image, "file"):
            return _error(
                grpc.StatusCode.INVALID_ARGUMENT, "send the query as a file field 'image'"
            )
        try:
            k = int(form.get("k", "10"))
        except ValueError:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, "k must be a whole number")
        message = pb.SearchRequest(
            collection=str(form.get("collection", "")), image=pb.Image(data=image.file.read()), k=k
        )
        try:
            return web.json_response(to_json(await self.servicer.Search(message, _Context())))
        except CallError as exc:
            return _error(exc.code, exc.message)

    async def _image(self, request: web.Request) -> web.Response:
        """A stored item's picture, as a JPEG of at most ``size`` px, read from its uri (a file or
        an archive member on this machine) for the page's grids."""
        try:
            size = int(request.query.get("size", "256"))
            data = await item_image(
                self.servicer.service,
                request.query.get("collection", ""),
                request.query.get("id", ""),
                size,
            )
        except CallError as exc:
            return _error(exc.code, exc.message)
        except ValueError:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, "size must be a whole number")
        return web.Response(
            body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=60"}
        )

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=OPENAPI.read_text(), content_type="application/json")

    async def _page(self, request: web.Request) -> web.Response:
        return web.FileResponse(PAGE / "index.html")


async def _messages(request: web.Request, message_type) -> AsyncIterator:
    """A client-streaming body: one JSON message per line (blank lines skipped)."""
    buffer = b""
    async for chunk in request.content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield _parse(line, message_type)
    if buffer.strip():
        yield _parse(buffer, message_type)
