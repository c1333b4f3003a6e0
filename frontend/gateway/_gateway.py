"""The gateway app: HTTP bindings to the gRPC method table, answered as grpc-gateway (v1) answers.

A binding maps a POST path to a gRPC method path; the ``Method`` comes from the same table the gRPC
side serves (looked up per request, so methods added to it later are served at once), its request
and response types from the protobuf descriptor pool. A path with no binding gets Go's ``404 Not
Found``; another HTTP method than POST Go's ``405 Method Not Allowed``; a binding whose method is not
in the table the gRPC side's own UNIMPLEMENTED (``unknown service ...``), mapped to HTTP.

Unary: the body is one JSON value (an empty body is the empty request), decoded with ``Codec``
(an error is InvalidArgument, with Go's text), checked against the receive limit as the gRPC side
checks it (ResourceExhausted), handed to the handler; the response is the message as JSON, an error
``{"error":..,"code":..,"message":..}`` with the HTTP status of its code (``http_status``).
Server streams decode their request the same way; client streams decode the body's values as they
arrive (a failure on the first one is answered as a unary error, with code Unknown: grpc-gateway
returns the decoder's bare error there); every streamed response is a
chunked body of ``{"result":...}`` lines, and an error after the first ends it with grpc-gateway's
``{"error":{"grpc_code":..,"http_code":..,"message":..,"http_status":..}}``. The handler runs with a
``GatewayCall``; the client going away cancels it, as a reset stream does on the gRPC side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from frontend.gateway._call import STREAM_HEADERS, GatewayCall, incoming_metadata, parse_timeout
from frontend.gateway._gojson import Decoder, GoJSONError, encode_string
from frontend.gateway._jsonpb import Codec
from frontend.grpc import (
    CallEnded,
    GrpcError,
    Kind,
    Method,
    MethodStats,
    StatusCode,
    too_large,
    unimplemented_status,
)
from frontend.http1 import BodyTooLarge, Exchange, ExchangeClosed

ErrorStatus = Callable[[BaseException], "tuple[int, str] | None"]

_HTTP = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 408,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400,  # grpc-gateway 1.16 (etcd 3.5); 1.6 (Debian's etcd 3.4) said 412
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
}

JSON_HEADERS = (("Content-Type", "application/json"),)
OK_HEADERS = STREAM_HEADERS
TEXT_HEADERS = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))


def http_status(code: int) -> int:
    """grpc-gateway's HTTPStatusFromCode."""
    return _HTTP.get(code, 500)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Binding:
    http_path: str
    grpc_path: str  # "/package.Service/Method"


def error_json(code: int, message: str) -> bytes:
    """grpc-gateway's unary error body (jsonpb: empty fields left out)."""
    parts = []
    if message:
        parts.append('"error":' + encode_string(message))
    if code:
        parts.append(f'"code":{code}')
    if message:
        parts.append('"message":' + encode_string(message))
    return ("{" + ",".join(parts) + "}").encode()


def stream_error_json(code: int, message: str) -> bytes:
    """grpc-gateway's error chunk of a stream."""
    http = http_status(code)
    parts = []
    if code:
        parts.append(f'"grpc_code":{code}')
    parts.append(f'"http_code":{http}')
    if message:
        parts.append('"message":' + encode_string(message))
    parts.append('"http_status":' + encode_string(HTTPStatus(http).phrase))
    return ('{"error":{' + ",".join(parts) + "}}").encode()


class _Route:
    __slots__ = ("grpc_path", "key", "request_cls", "response_cls", "services")

    def __init__(self, grpc_path: str, services: frozenset[str]) -> None:
        self.grpc_path = grpc_path
        self.key = grpc_path.encode("ascii")
        service, _, name = grpc_path.lstrip("/").rpartition("/")
        self.services = services
        pool = descriptor_pool.Default()
        try:
            method = pool.FindServiceByName(service).FindMethodByName(name)
        except KeyError:
            self.request_cls = self.response_cls = None
        else:
            self.request_cls = message_factory.GetMessageClass(method.input_type)
            self.response_cls = message_factory.GetMessageClass(method.output_type)


class Gateway:
    """An ``Http1App`` for the bindings, calling methods from ``methods`` (keys: gRPC paths as bytes)."""

    def __init__(
        self,
        bindings: Iterable[Binding],
        methods: Mapping[bytes, Method],
        *,
        codec: Codec | None = None,
        error_status: ErrorStatus | None = None,
        receive_limit: int = 4 << 20,
        services: frozenset[str] | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.methods = methods
        self.codec = codec or Codec()
        self.error_status = error_status
        self.receive_limit = receive_limit
        if services is None:
            services = frozenset(k.decode().lstrip("/").rpartition("/")[0] for k in methods)
        self.services = services
        self.routes = {b.http_path: _Route(b.grpc_path, services) for b in bindings}
        self.extra = extra_headers

    def serves(self, path: str) -> bool:
        return path in self.routes

    # ---- the app ----

    def __call__(self, ex: Exchange) -> Awaitable[None] | None:
        request = ex.request
        route = self.routes.get(request.path)
        if route is None:
            ex.respond(404, self.extra + TEXT_HEADERS, b"Not Found\n")
            return None
        if request.method != "POST":
            ex.respond(405, self.extra + TEXT_HEADERS, b"Method Not Allowed\n")
            return None
        method = self.methods.get(route.key)
        if method is None or route.request_cls is None:
            self._error(ex, *unimplemented_status(route.grpc_path, self.services))
            return None
        deadline = None
        timeout = request.header("grpc-timeout")
        if timeout is not None:
            try:
                deadline = asyncio.get_running_loop().time() + parse_timeout(timeout)
            except GrpcError as exc:
                self._error(ex, exc.code, exc.message)
                return None
        if method.kind == Kind.BIDI:
            return self._bidi(ex, route, method, deadline)
        if ex.body_complete:
            return self._unary(ex, route, method, ex.body(), deadline)
        return self._unary_later(ex, route, method, deadline)

    # ---- unary and server streams ----

    async def _unary_later(self, ex: Exchange, route: _Route, method: Method, deadline: float | None) -> None:
        try:
            body = await ex.read_body()
        except BodyTooLarge:
            ex.respond(413, self.extra + TEXT_HEADERS, b"request body too large\n")
            return
        result = self._unary(ex, route, method, body, deadline)
        if result is not None:
            await result

    def _decode_one(self, route: _Route, body: bytes) -> Message:
        decoder = Decoder()
        decoder.feed(body)
        decoder.end()
        try:
            raw = decoder.next_value()
        except EOFError:
            return route.request_cls()  # type: ignore[misc]
        except GoJSONError as exc:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, exc.message) from None
        return self._decode(route, raw)  # type: ignore[arg-type]

    def _decode(self, route: _Route, raw: bytes) -> Message:
        try:
            msg = self.codec.unmarshal(route.request_cls, raw)  # type: ignore[arg-type]
        except GoJSONError as exc:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, exc.message) from None
        size = msg.ByteSize()
        if size > self.receive_limit:
            raise too_large(size, self.receive_limit)
        return msg

    def _unary(
        self, ex: Exchange, route: _Route, method: Method, body: bytes, deadline: float | None
    ) -> Awaitable[None] | None:
        try:
            request = self._decode_one(route, body)
        except GrpcError as exc:
            self._error(ex, exc.code, exc.message)
            return None
        call = self._call(ex, route, deadline)
        stats = method.stats
        stats.started += 1
        stats.received += 1
        if method.kind == Kind.SERVER_STREAM:
            return self._run_stream(call, stats, method.handler(request, call))
        try:
            result = method.handler(request, call)
        except BaseException as exc:
            self._fail(call, stats, exc)
            return None
        if hasattr(result, "SerializeToString"):
            self._respond(call, stats, result)
            return None
        return self._await_unary(call, stats, result)

    async def _await_unary(self, call: GatewayCall, stats: MethodStats, result: Awaitable[Any]) -> None:
        try:
            if call.deadline is not None:
                response = await asyncio.wait_for(result, max(call.deadline - asyncio.get_running_loop().time(), 0))
            else:
                response = await result
        except TimeoutError:
            self._finish_error(call, stats, StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
            return
        except asyncio.CancelledError:
            if not call.exchange.closed:
                raise
            stats.handled[StatusCode.CANCELLED] += 1  # the client went away
            raise
        except BaseException as exc:
            self._fail(call, stats, exc)
            return
        self._respond(call, stats, response)

    def _respond(self, call: GatewayCall, stats: MethodStats, response: Message) -> None:
        if call.finished:
            return
        call.finished = True
        stats.sent += 1
        stats.handled[0] += 1
        call.exchange.respond(200, self.extra + OK_HEADERS, self.codec.marshal(response))

    # ---- streams ----

    async def _bidi(self, ex: Exchange, route: _Route, method: Method, deadline: float | None) -> None:
        decoder = Decoder()
        # grpc-gateway decodes the first request before it opens the stream: a failure is a plain error
        while True:
            try:
                raw = decoder.next_value()
            except EOFError:
                raw = None
                break
            except GoJSONError as exc:
                self._error(ex, StatusCode.UNKNOWN, exc.message)  # grpc-gateway returns the bare error here
                return
            if raw is not None:
                break
            try:
                chunk = await ex.next_chunk()
            except (ExchangeClosed, BodyTooLarge):
                return
            if chunk is None:
                decoder.end()
            else:
                decoder.feed(chunk)
        first: Message | None = None
        if raw is not None:
            try:
                first = self._decode(route, raw)
            except GrpcError as exc:
                code = StatusCode.UNKNOWN if exc.code == StatusCode.INVALID_ARGUMENT else exc.code
                self._error(ex, code, exc.message)
                return
        stats = method.stats
        call = self._call(ex, route, deadline, decoder=decoder, first=first)
        stats.started += 1
        await self._run_stream(call, stats, method.handler(call))

    async def _run_stream(self, call: GatewayCall, stats: MethodStats, coro: Awaitable[None]) -> None:
        call.task = task = asyncio.ensure_future(coro)
        timer = None
        if call.deadline is not None:
            timer = asyncio.get_running_loop().call_at(
                call.deadline, lambda: call.fail(GrpcError(StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded"))
            )
        try:
            await task
        except asyncio.CancelledError:
            if call.finished:
                return  # fail() ended it (the handler's task was cancelled)
            stats.handled[StatusCode.CANCELLED] += 1
            if not task.done():
                task.cancel()
            raise
        except CallEnded:
            if not call.finished:
                stats.handled[StatusCode.CANCELLED] += 1
                call.finished = True
            return
        except BaseException as exc:
            self._fail(call, stats, exc)
            return
        finally:
            if timer is not None:
                timer.cancel()
            stats.received += call.received
            stats.sent += call.sent
            call.received = call.sent = 0
        if call.finished:
            return
        call.finished = True
        stats.handled[0] += 1
        ex = call.exchange
        if not call.started:
            ex.start(200, self.extra + STREAM_HEADERS)
        ex.end()

    # ---- errors ----

    def _call(
        self,
        ex: Exchange,
        route: _Route,
        deadline: float | None,
        decoder: Decoder | None = None,
        first: Message | None = None,
    ) -> GatewayCall:
        return GatewayCall(
            ex,
            route.grpc_path,
            incoming_metadata(ex),
            deadline,
            encode_result=self.codec.marshal,
            on_error=lambda call, exc, stats=self.methods[route.key].stats: self._fail(call, stats, exc),
            decode_request=lambda raw: self._decode(route, raw),
            decoder=decoder,
            first=first,
            stream_headers=self.extra + STREAM_HEADERS,
        )

    def status_of(self, exc: BaseException) -> tuple[int, str]:
        if isinstance(exc, GrpcError):
            return exc.code, exc.message
        status = self.error_status(exc) if self.error_status is not None else None
        if status is None:
            return StatusCode.UNKNOWN, f"raftkv: unexpected {type(exc).__name__}: {exc}"
        return status

    def _fail(self, call: GatewayCall, stats: MethodStats, exc: BaseException) -> None:
        self._finish_error(call, stats, *self.status_of(exc))

    def _finish_error(self, call: GatewayCall, stats: MethodStats, code: int, message: str) -> None:
        if call.finished:
            return
        call.finished = True
        stats.handled[code if 0 <= code < 17 else StatusCode.UNKNOWN] += 1
        ex = call.exchange
        if ex.closed or ex.finished:
            return
        if call.started:  # grpc-gateway: the error as the stream's last chunk
            ex.end(stream_error_json(code, message))
        else:
            self._error(ex, code, message)

    def _error(self, ex: Exchange, code: int, message: str) -> None:
        if ex.started:
            return
        ex.respond(http_status(code), self.extra + JSON_HEADERS, error_json(code, message))
