"""gRPC calls over one HTTP/2 connection: the dispatch of requests to handlers and of their results
back to frames (gRPC over HTTP/2, grpc's PROTOCOL-HTTP2.md).

``GrpcSession.handle(events)`` takes what ``H2Connection.receive_data`` returned. A request's
``:path`` picks its ``Method`` from the table (unknown: UNIMPLEMENTED with grpc-go's wording); its
``grpc-encoding`` must be identity or gzip (else UNIMPLEMENTED, as grpc answers), its
``grpc-timeout`` becomes the call's deadline (past it the call ends with DEADLINE_EXCEEDED). A unary
handler runs as soon as its one message is complete: what it returns is answered at once, an
awaitable is awaited (a future through a callback, a coroutine in a task), so a request answered
synchronously never costs a task. Streaming handlers run in a task each. Responses are headers,
data and ``grpc-status`` trailers from pre-encoded blocks; an error before any message is a
trailers-only response. A client's RST_STREAM, the connection's end or the deadline cancel the
handler's task. Requests that fail to decode end with INTERNAL ``grpc: error unmarshalling
request: ...``; messages over the limit with RESOURCE_EXHAUSTED (``_framing``).

Back-pressure: a streaming call's decoded requests wait in its queue, and flow-control credit for
them is given back only while the queue holds less than ``QUEUE_BYTES`` (a client that sends
faster than the handler reads is stopped by its windows). A ``write`` waits while more than
``WRITE_HIGH_WATER`` bytes of the stream wait for the client's windows or the socket is paused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from frontend.grpc._call import Kind, ServerCall
from frontend.grpc._framing import MessageReader, decoder_for, frame
from frontend.grpc._status import GrpcError, StatusCode, percent_encode
from frontend.http2 import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    H2Connection,
    Request,
    RequestReceived,
    StreamDrained,
    StreamEnded,
    StreamReset,
    encode_block,
)

log = logging.getLogger("raftkv.frontend")

QUEUE_BYTES = 1 << 20
WRITE_HIGH_WATER = 256 << 10
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class MethodStats:
    """What a method served, counted as go-grpc-prometheus counts it (read at scrape time; one
    integer increment per event is all a call pays)."""

    __slots__ = ("handled", "received", "sent", "started")

    def __init__(self) -> None:
        self.started = 0
        self.handled = [0] * 17  # by status code
        self.received = 0  # messages
        self.sent = 0


@dataclass(frozen=True, slots=True)
class Method:
    """One served method: its kind, its handler and how its request is decoded from bytes."""

    kind: Kind
    handler: Callable[..., Any]
    decode: Callable[[bytes], Any]
    stats: MethodStats = field(default_factory=MethodStats, compare=False)


ErrorStatus = Callable[[BaseException], "tuple[int, str] | None"]

RESPONSE_HEADERS = encode_block([(":status", "200"), ("content-type", "application/grpc")])
OK_TRAILERS = encode_block([("grpc-status", "0")])
_status_blocks: dict[tuple[int, str], tuple[bytes, bytes]] = {}


def status_blocks(code: int, message: str) -> tuple[bytes, bytes]:
    """(trailers, trailers-only headers) for a status, encoded once per (code, message)."""
    key = (code, message)
    blocks = _status_blocks.get(key)
    if blocks is None:
        status = [("grpc-status", str(code))]
        if message:
            status.append(("grpc-message", percent_encode(message)))
        blocks = (
            encode_block(status),
            encode_block([(":status", "200"), ("content-type", "application/grpc"), *status]),
        )
        if len(_status_blocks) < 4096:
            _status_blocks[key] = blocks
    return blocks


def parse_timeout(value: bytes) -> float:
    """grpc-timeout (1-8 digits and a unit) in seconds; GrpcError(INTERNAL) if malformed."""
    digits, unit = value[:-1], value[-1:]
    if not 1 <= len(digits) <= 8 or not digits.isdigit() or unit not in _UNITS:
        raise GrpcError(StatusCode.INTERNAL, f"transport: malformed grpc-timeout: {value.decode('latin-1')!r}")
    return int(digits) * _UNITS[unit]


def unknown_method(path: str) -> str:
    service, _, name = path.lstrip("/").rpartition("/")
    return f"unknown method {name} for service {service}" if service else f"malformed method name: {path!r}"


def unimplemented_status(path: str, services: frozenset[str]) -> tuple[int, str]:
    """grpc-go's answer to a path no method serves: an unknown service, or an unknown method of one."""
    service = path.lstrip("/").rpartition("/")[0]
    if service and service not in services:
        return StatusCode.UNIMPLEMENTED, f"unknown service {service}"
    return StatusCode.UNIMPLEMENTED, unknown_method(path)


class GrpcSession:
    """The gRPC side of one connection. ``on_output`` is called whenever frames were queued."""

    def __init__(
        self,
        conn: H2Connection,
        methods: Mapping[bytes, Method],
        *,
        loop: asyncio.AbstractEventLoop,
        max_receive_message_length: int,
        on_output: Callable[[], None],
        error_status: ErrorStatus | None = None,
        services: frozenset[str] = frozenset(),
    ) -> None:
        self.conn = conn
        self.methods = methods
        self.loop = loop
        self.limit = max_receive_message_length
        self.on_output = on_output
        self.error_status = error_status
        self.services = services  # known service names, for grpc-go's "unknown service" wording
        self.peer_cert: dict[str, Any] | None = None  # the client's verified TLS certificate, if any
        self.calls: dict[int, ServerCall] = {}
        self.paused = False  # the socket's buffer is full (the driver's pause_writing)

    # ---- events ----

    def handle(self, events: list[object]) -> None:
        calls = self.calls
        conn = self.conn
        for event in events:
            cls = type(event)
            if cls is DataReceived:
                call = calls.get(event.stream_id)  # type: ignore[attr-defined]
                if call is None:
                    conn.acknowledge(event.stream_id, event.flow_length)  # type: ignore[attr-defined]
                else:
                    self._data(call, event.data, event.flow_length)  # type: ignore[attr-defined]
            elif cls is RequestReceived:
                self._request(event.stream_id, event.request)  # type: ignore[attr-defined, arg-type]
            elif cls is StreamEnded:
                call = calls.get(event.stream_id)  # type: ignore[attr-defined]
                if call is not None:
                    self._ended(call)
            elif cls is StreamReset:
                call = calls.get(event.stream_id)  # type: ignore[attr-defined]
                if call is not None:
                    self._cancel(call)
            elif cls is StreamDrained:
                call = calls.get(event.stream_id)  # type: ignore[attr-defined]
                if call is not None:
                    call.wake()
            elif cls is ConnectionTerminated and (not event.remote or event.error_code):  # type: ignore[attr-defined]
                self.connection_lost()
        if conn.has_data_to_send:
            self.on_output()

    def connection_lost(self) -> None:
        """The connection is gone: every call is cancelled, no handler outlives it."""
        for call in list(self.calls.values()):
            self._cancel(call)

    def resume(self) -> None:
        self.paused = False
        for call in list(self.calls.values()):
            call.wake()

    # ---- requests ----

    def _reject(self, stream_id: int, code: int, message: str) -> None:
        self.conn.send_headers(stream_id, status_blocks(code, message)[1], end_stream=True)
        self._stop_receiving(stream_id)

    def _stop_receiving(self, stream_id: int) -> None:
        stream = self.conn.streams.get(stream_id)
        if stream is not None and not stream.send_open and stream.recv_open:
            self.conn.reset_stream(stream_id, ErrorCode.NO_ERROR)  # answered: the rest is not wanted

    def _request(self, stream_id: int, request: Request) -> None:
        if request.method != b"POST":
            self.conn.send_headers(stream_id, encode_block([(":status", "405")]), end_stream=True)
            self._stop_receiving(stream_id)
            return
        ctype = request.get(b"content-type")
        if ctype is None or not ctype.startswith(b"application/grpc"):
            self.conn.send_headers(stream_id, encode_block([(":status", "415")]), end_stream=True)
            self._stop_receiving(stream_id)
            return
        method = self.methods.get(request.path)
        if method is None:
            self._reject(stream_id, *unimplemented_status(request.path.decode("latin-1"), self.services))
            return
        deadline = None
        try:
            encoding = request.get(b"grpc-encoding")
            compression = decoder_for(None if encoding is None else encoding.decode("latin-1"))
            timeout = request.get(b"grpc-timeout")
            if timeout is not None:
                deadline = self.loop.time() + parse_timeout(timeout)
        except GrpcError as exc:
            self._reject(stream_id, exc.code, exc.message)
            return
        call = ServerCall(self, stream_id, request, method.kind, MessageReader(self.limit, compression), deadline)
        call.stats = stats = method.stats
        stats.started += 1
        self.calls[stream_id] = call
        if deadline is not None:
            call.timer = self.loop.call_at(deadline, self._expire, call)
        if method.kind == Kind.BIDI:
            call.started = True
            self._start_task(call, method.handler(call))

    def _data(self, call: ServerCall, data: bytes, flow: int) -> None:
        try:
            messages = call.reader.feed(data)
        except GrpcError as exc:
            self.conn.acknowledge(call.stream_id, flow)
            self.finish(call, exc.code, exc.message)
            return
        if call.kind != Kind.BIDI:
            self.conn.acknowledge(call.stream_id, flow)
            if messages and not call.started:
                call.started = True
                self._run(call, messages[0])
            return
        if call._queued_bytes < QUEUE_BYTES:
            self.conn.acknowledge(call.stream_id, flow)
        else:
            call._unacked += flow
        method = self.methods[call.request.path]
        for body in messages:
            try:
                request = method.decode(body)
            except Exception as exc:
                self.finish(call, StatusCode.INTERNAL, f"grpc: error unmarshalling request: {exc}")
                return
            call.push(request, len(body) + 5)
            call.stats.received += 1

    def consumed(self, call: ServerCall, size: int) -> None:
        """A streaming handler took a request: give back held-back credit once the queue is short."""
        if call._unacked and call._queued_bytes < QUEUE_BYTES:
            unacked, call._unacked = call._unacked, 0
            self.conn.acknowledge(call.stream_id, unacked)
            self.on_output()

    def _ended(self, call: ServerCall) -> None:
        call.remote_ended = True
        if not call.started and not call.finished:
            self.finish(call, StatusCode.INTERNAL, "grpc: the client sent no request message")
            return
        call.wake()

    def _run(self, call: ServerCall, body: bytes) -> None:
        method = self.methods[call.request.path]
        method.stats.received += 1
        try:
            request = method.decode(body)
        except Exception as exc:
            self.finish(call, StatusCode.INTERNAL, f"grpc: error unmarshalling request: {exc}")
            return
        if call.kind == Kind.SERVER_STREAM:
            self._start_task(call, method.handler(request, call))
            return
        try:
            result = method.handler(request, call)
        except BaseException as exc:
            self.fail(call, exc)
            return
        if hasattr(result, "SerializeToString"):
            self._respond(call, result)
        elif asyncio.isfuture(result):
            call.task = result
            result.add_done_callback(lambda fut, call=call: self._unary_done(call, fut))
        else:
            task = self.loop.create_task(result)
            call.task = task
            task.add_done_callback(lambda fut, call=call: self._unary_done(call, fut))

    def _start_task(self, call: ServerCall, coro: Any) -> None:
        task = self.loop.create_task(coro)
        call.task = task
        task.add_done_callback(lambda fut, call=call: self._stream_done(call, fut))

    # ---- results ----

    def _unary_done(self, call: ServerCall, fut: asyncio.Future[Any]) -> None:
        if call.finished:
            return
        if fut.cancelled():
            self.finish(call, StatusCode.CANCELLED, "context canceled")
            return
        exc = fut.exception()
        if exc is not None:
            self.fail(call, exc)
        else:
            self._respond(call, fut.result())

    def _stream_done(self, call: ServerCall, fut: asyncio.Future[Any]) -> None:
        if call.finished:
            return
        if fut.cancelled():
            self.finish(call, StatusCode.CANCELLED, "context canceled")
            return
        exc = fut.exception()
        if exc is not None:
            self.fail(call, exc)
        else:
            self.finish(call, StatusCode.OK, "")

    def _respond(self, call: ServerCall, response: Any) -> None:
        if call.finished:
            return
        sid = call.stream_id
        conn = self.conn
        conn.send_headers(sid, RESPONSE_HEADERS)
        conn.send_data(sid, frame(response.SerializeToString()))
        conn.send_trailers(sid, OK_TRAILERS)
        stats = call.stats
        stats.sent += 1
        stats.handled[0] += 1
        self._close(call)
        self._stop_receiving(sid)
        self.on_output()

    def fail(self, call: ServerCall, exc: BaseException) -> None:
        if isinstance(exc, GrpcError):
            self.finish(call, exc.code, exc.message)
            return
        status = self.error_status(exc) if self.error_status is not None else None
        if status is None:
            log.error("handler failed", exc_info=exc, extra={"method": call.path})
            status = (StatusCode.UNKNOWN, f"raftkv: unexpected {type(exc).__name__}: {exc}")
        self.finish(call, *status)

    def send_message(self, call: ServerCall, payload: bytes) -> None:
        conn = self.conn
        if not call.headers_sent:
            call.headers_sent = True
            conn.send_headers(call.stream_id, RESPONSE_HEADERS)
        conn.send_data(call.stream_id, frame(payload))
        call.stats.sent += 1
        self.on_output()

    def must_wait(self, call: ServerCall) -> bool:
        return self.paused or self.conn.outbound_pending(call.stream_id) > WRITE_HIGH_WATER

    def finish(self, call: ServerCall, code: int, message: str) -> None:
        """Ends the call with a status (trailers, or trailers-only if nothing was sent)."""
        if call.finished:
            return
        call.stats.handled[code if 0 <= code < 17 else StatusCode.UNKNOWN] += 1
        sid = call.stream_id
        if sid not in self.conn.streams:  # reset or the connection failed: nothing can be sent
            self._close(call)
            return
        trailers, trailers_only = status_blocks(code, message)
        if call.headers_sent:
            self.conn.send_trailers(sid, OK_TRAILERS if code == 0 and not message else trailers)
        else:
            self.conn.send_headers(sid, trailers_only, end_stream=True)
        self._close(call)
        self._stop_receiving(sid)
        self.on_output()

    def _close(self, call: ServerCall) -> None:
        call.finished = True
        self.calls.pop(call.stream_id, None)
        if call.timer is not None:
            call.timer.cancel()
        task = call.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        call.wake()

    def _cancel(self, call: ServerCall) -> None:
        """The client reset the stream or the connection is gone: nothing more is sent."""
        if call.finished:
            return
        call.stats.handled[StatusCode.CANCELLED] += 1
        self._close(call)

    def _expire(self, call: ServerCall) -> None:
        call.timer = None
        self.finish(call, StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
