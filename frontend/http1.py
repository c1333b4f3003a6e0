"""The HTTP/1.1 side of the client port: one connection's requests, parsed by ``httptools``, answered in order.

The port tells HTTP/1.1 from HTTP/2 by the first bytes (``frontend.protocol``); everything that is not
the HTTP/2 preface comes here. An ``Http1Session`` parses what the socket delivers (llhttp, through
``httptools``: no HTTP/1.1 parsing of our own) into ``Exchange`` objects, one per request, and hands
them to the ``Http1App`` one at a time, in order: pipelined requests wait their turn (reading pauses
once ``max_pipelined`` of them are queued) and their responses go out in the order they came.

An exchange is handed over once its head is parsed and the bytes at hand are consumed, so a small
request that arrived whole can be answered synchronously; otherwise the app awaits the body
(``read_body``, or ``next_chunk`` for a body it streams, as the watch and keep-alive gateways do).
Responses are whole (``respond``: Content-Length) or streamed (``start``, ``write``, ``end``: a
chunked body, or one delimited by closing for an HTTP/1.0 client); ``write`` waits while the socket
does not take what was written (back-pressure, never an unbounded buffer). Request bodies may be
chunked. ``Expect: 100-continue`` is answered with ``100 Continue`` when the app first reads the body
(as Go's net/http does); a request the app answers without reading its body closes the connection
if the client was still waiting to send it.

Limits and timers: the request line and headers together are limited to ``max_header_bytes`` (431)
and must arrive within ``header_timeout`` of the request's first byte, however slowly they trickle
(slowloris); a body over ``max_body_bytes`` is refused with 413 (at once when Content-Length says
so, without reading it); a body the app waits for must keep arriving (``body_timeout``, 408); a kept
alive connection with no request for ``idle_timeout`` is closed. A request that does not parse gets
Go's ``400 Bad Request`` and the connection is closed; so does every refusal above.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

import httptools

log = logging.getLogger("raftkv.frontend")

Headers = Iterable[tuple[str, str]]


@dataclass(frozen=True)
class Http1Config:
    max_header_bytes: int = 1 << 20  # Go's net/http default, which etcd keeps
    max_body_bytes: int = 8 << 20
    header_timeout: float = 15.0
    body_timeout: float = 60.0
    idle_timeout: float = 300.0
    max_pipelined: int = 16
    stream_buffer_bytes: int = 1 << 20  # request body bytes a handler has not taken before reading pauses


class ExchangeClosed(Exception):
    """The connection is gone (or the exchange is over): nothing more can be read or written."""


class BodyTooLarge(Exception):
    """The request body passed ``max_body_bytes`` while the app was reading it."""


class Http1Request:
    """A parsed request head: method, target (path and query), version, headers (names lowercased)."""

    __slots__ = ("headers", "method", "path", "query", "remote", "target", "version")

    def __init__(
        self, method: str, target: str, version: str, headers: list[tuple[bytes, bytes]], remote: str | None
    ) -> None:
        self.method = method
        self.target = target
        path, _, query = target.partition("?")
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.remote = remote

    def header(self, name: str) -> str | None:
        """The first value of a header (name in lower case), or None."""
        key = name.encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


class Http1App(Protocol):
    def __call__(self, exchange: Exchange) -> Awaitable[None] | None:
        """Answers the exchange, synchronously (returning None) or by the awaitable it returns."""
        ...


class Exchange:
    """One request and its response on an ``Http1Session``."""

    def __init__(self, session: Http1Session, request: Http1Request, keep_alive: bool, expect_continue: bool) -> None:
        self.session = session
        self.request = request
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.preset: tuple[int, bytes] | None = None  # a refusal decided while parsing (413, 417)
        self.failure: tuple[int, bytes] | None = None  # why the body broke while the app had it (400, 413)
        self.task: asyncio.Future[None] | None = None
        self.dispatched = False
        self.started = False  # response head written
        self.finished = False  # response complete
        self.closed = False  # the connection is gone
        self.head_only = request.method == "HEAD"
        self._chunked = False
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._body_size = 0
        self._body_done = False
        self._too_large = False
        self._broken = False  # the body cannot be read to its end (the connection ended or did not parse)
        self._reading = False  # the app waits for the body (the body timer runs)
        self._continue_sent = False
        self._waiter: asyncio.Future[None] | None = None

    # ---- the request body ----

    @property
    def body_complete(self) -> bool:
        return self._body_done

    def body(self) -> bytes:
        """The whole body, once complete (``body_complete``)."""
        if not self._body_done:
            raise RuntimeError("the request body is not complete")
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._chunks.append(data)
        return data

    async def read_body(self) -> bytes:
        """Waits for the whole body; BodyTooLarge past the limit, ExchangeClosed if the client went away."""
        self._reading = True
        try:
            while not self._body_done:
                await self._wait_body()
        finally:
            self._reading = False
        return self.body()

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as it arrives (None at its end); no body timeout applies."""
        while not self._chunks:
            if self._body_done:
                return None
            await self._wait_body()
        data = self._chunks.popleft()
        self._queued -= len(data)
        self.session.consumed()
        return data

    async def _wait_body(self) -> None:
        self._check_body()
        self.session.want_body(self)
        fut = self.session.loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None
        self._check_body()

    def _check_body(self) -> None:
        if self._too_large:
            raise BodyTooLarge()
        if self.closed or self._broken:
            raise ExchangeClosed()

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    # ---- the response ----

    def respond(self, status: int, headers: Headers = (), body: bytes = b"") -> None:
        """A whole response, with Content-Length."""
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        if self.closed:
            return
        session = self.session
        keep = self.keep_alive and session.may_keep_alive(self)
        head = session.render_head(self, status, headers, [("Content-Length", str(len(body)))], keep)
        session.write(head if self.head_only else head + body)
        self._finish(keep)

    def start(self, status: int, headers: Headers = ()) -> None:
        """Starts a streamed response: chunked for HTTP/1.1, delimited by closing for HTTP/1.0."""
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        if self.closed:
            return
        session = self.session
        self._chunked = self.request.version != "1.0"
        if self._chunked:
            extra = [("Transfer-Encoding", "chunked")]
            keep = self.keep_alive
        else:
            extra = []
            keep = False
            self.keep_alive = False
        session.write(session.render_head(self, status, headers, extra, keep))

    async def write(self, data: bytes) -> None:
        """Sends part of a streamed body; waits while the socket's buffer is full."""
        if self.closed or self.finished:
            raise ExchangeClosed()
        if not self.started:
            raise RuntimeError("start() the response first")
        if data and not self.head_only:
            self.session.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await self.session.drained()
        if self.closed:
            raise ExchangeClosed()

    def end(self, last: bytes = b"") -> None:
        """Ends a streamed response, after last (written without waiting: one final piece)."""
        if self.finished or self.closed:
            return
        if not self.started:
            raise RuntimeError("start() the response first")
        if not self.head_only:
            if self._chunked:
                self.session.write((b"%x\r\n%b\r\n" % (len(last), last) if last else b"") + b"0\r\n\r\n")
            elif last:
                self.session.write(last)
        self._finish(self.keep_alive and self.session.may_keep_alive(self))

    def _finish(self, keep: bool) -> None:
        self.finished = True
        self.session.finished(self, keep)

    def _lost(self) -> None:
        self.closed = True
        self._wake()
        task = self.task
        if task is not None and not task.done():
            task.cancel()


class _Refuse(Exception):
    """Stops parsing: the connection ends after answering what came before with this status."""

    def __init__(self, status: int, body: bytes | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _go_text(status: int) -> bytes:
    """The body Go's net/http sends with a refusal it writes itself."""
    return f"{status} {HTTPStatus(status).phrase}".encode()


class _DateCache:
    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True)
        return self._value


_date = _DateCache()


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


class Http1Session:
    """One HTTP/1.1 connection: ``feed`` it what the socket delivers; it writes to the transport itself."""

    def __init__(
        self,
        app: Http1App,
        transport: Transport,
        loop: asyncio.AbstractEventLoop,
        config: Http1Config | None = None,
        remote: str | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.transport = transport
        self.loop = loop
        self.config = config or Http1Config()
        self.remote = remote
        self._on_close = on_close
        self._parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()  # head parsed, answered in order; [0] is the app's
        self._parsing: Exchange | None = None  # the exchange whose body is being parsed
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head_since: float | None = None  # a request head is being received since
        self._idle_since = loop.time()
        self._progress = loop.time()  # bytes last arrived
        self._stopped = False  # nothing more is parsed (a refusal, the end of a last request, shutdown)
        self._last = False  # the request being parsed is the last one (Connection: close)
        self.closing = False  # the connection ends once what is queued is answered
        self.closed = False
        self._write_paused = False
        self._read_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._dispatching = False
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.config.idle_timeout)

    # ---- httptools callbacks ----

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._head_bytes = 0
        self._head_since = now = self.loop.time()
        self._wake_by(now + self.config.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.config.max_header_bytes:
            raise _Refuse(431)

    def on_headers_complete(self) -> None:
        parser = self._parser
        self._head_since = None
        request = Http1Request(
            parser.get_method().decode("latin-1"),
            self._url.decode("latin-1"),
            parser.get_http_version(),
            self._headers,
            self.remote,
        )
        expect = request.header("expect")
        ex = Exchange(self, request, parser.should_keep_alive(), expect is not None)
        if not ex.keep_alive:
            self._last = True  # nothing after a request that closes the connection is served
        length = request.header("content-length")
        if expect is not None and expect.lower() != "100-continue":
            ex.preset = (417, _go_text(417))
        elif length is not None and length.strip().isdigit() and int(length) > self.config.max_body_bytes:
            ex.preset = (413, b"request body too large\n")
        self.queue.append(ex)
        if ex.preset is not None:
            ex._body_done = True
            raise _Refuse(0)  # answered in turn, then the connection ends: the body is not read
        self._parsing = ex

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        ex._body_size += len(body)
        if ex._body_size > self.config.max_body_bytes:
            ex._too_large = True
            raise _Refuse(413, b"request body too large\n")
        if ex.finished:
            return  # answered already: the rest of the body is read and dropped
        ex._chunks.append(body)
        ex._queued += len(body)
        ex._wake()

    def on_message_complete(self) -> None:
        ex = self._parsing
        self._parsing = None
        if ex is not None:
            ex._body_done = True
            ex._wake()
        if self._last:
            raise _Refuse(0)

    # ---- input ----

    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        self._progress = self.loop.time()
        if not self._stopped:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                if isinstance(cause, _Refuse):
                    self._refuse(cause.status, cause.body)
                else:
                    log.error("HTTP/1.1 parser callback failed", exc_info=cause)
                    self._refuse(500)
            except _Refuse as exc:
                self._refuse(exc.status, exc.body)
            except httptools.HttpParserUpgrade:
                self._refuse(0)  # the upgraded request is answered as plain HTTP/1.1, then the connection ends
            except httptools.HttpParserError:
                self._refuse(400)
        self._dispatch()
        self._flow()

    def _refuse(self, status: int, body: bytes | None = None) -> None:
        """Stops parsing; with a status, answers it after what is queued (Go's wording), then closes.

        A body broken mid-way (it does not parse, or it grew past the limit) is its request's answer:
        before the app has the request, in its place; while the app reads it, if the app gives none."""
        self._stopped = True
        self._head_since = None
        self.closing = True
        text = (_go_text(status) if body is None else body) if status else b""
        ex = self._parsing
        self._parsing = None
        if ex is not None and not ex._body_done:
            ex._broken = True
            if status:
                if ex.dispatched:
                    ex.failure = (status, text)
                else:
                    ex.preset = (status, text)
            ex._wake()
        elif status:
            request = Http1Request("GET", "", "1.1", [], self.remote)
            ex = Exchange(self, request, keep_alive=False, expect_continue=False)
            ex.preset = (status, text)
            ex._body_done = True
            self.queue.append(ex)
        if not self.queue:
            self.close()

    # ---- dispatch ----

    def _dispatch(self) -> None:
        if self._dispatching:
            return  # a response given synchronously from inside the loop below: it goes on by itself
        self._dispatching = True
        try:
            self._dispatch_queued()
        finally:
            self._dispatching = False

    def _dispatch_queued(self) -> None:
        while self.queue and not self.closed:
            ex = self.queue[0]
            if ex.dispatched:
                return
            ex.dispatched = True
            if ex.preset is not None:
                status, body = ex.preset
                ex.keep_alive = False
                ex.respond(status, [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")], body)
                continue
            try:
                result = self.app(ex)
            except Exception:
                log.exception("HTTP/1.1 handler failed", extra={"path": ex.request.path})
                self._internal_error(ex)
                continue
            if result is not None:
                task = asyncio.ensure_future(result)
                ex.task = task
                task.add_done_callback(lambda fut, ex=ex: self._done(ex, fut))

    def _done(self, ex: Exchange, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            if not ex.finished and not ex.closed:
                self._internal_error(ex)
            return
        exc = fut.exception()
        if exc is not None and not isinstance(exc, (ExchangeClosed, BodyTooLarge)):
            log.error("HTTP/1.1 handler failed", exc_info=exc, extra={"path": ex.request.path})
        if not ex.finished and not ex.closed:
            self._internal_error(ex)

    def _internal_error(self, ex: Exchange) -> None:
        """The app gave no answer: the body's failure if it broke, else 500 (the connection goes on
        if the request was read whole)."""
        if ex.started:
            self.close()  # a streamed response cannot be ended cleanly once it broke
            return
        if ex.failure is not None:
            status, text = ex.failure
            ex.keep_alive = False
        else:
            status, text = 500, b"Internal Server Error\n"
            ex.keep_alive = ex.keep_alive and ex._body_done
        ex.respond(status, [("Content-Type", "text/plain; charset=utf-8")], text)

    def may_keep_alive(self, ex: Exchange) -> bool:
        """Whether the connection can go on after ex's response (False: Connection: close)."""
        if self.closing and (not self.queue or self.queue[-1] is ex):
            return False  # the last answer before the connection ends
        # a client waiting to send a body we never asked for cannot be told where its next request starts
        return ex._body_done or not ex.expect_continue or ex._continue_sent

    def finished(self, ex: Exchange, keep: bool) -> None:
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if not keep or (self.closing and not self.queue):
            self.close()
            return
        if not self.queue:
            self._idle_since = now = self.loop.time()
            self._wake_by(now + self.config.idle_timeout)
        self._dispatch()
        self._flow()

    # ---- the body's flow ----

    def want_body(self, ex: Exchange) -> None:
        """The app waits for ex's body: say 100 Continue if the client waits for that, read on."""
        if ex.expect_continue and not ex._continue_sent and not ex.started:
            ex._continue_sent = True
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if ex._reading:
            self._wake_by(self._progress + self.config.body_timeout)
        self._flow()

    def consumed(self) -> None:
        self._flow()

    def _flow(self) -> None:
        """Pauses reading while too much waits for the app (queued requests or unread body)."""
        if self.closed:
            return
        busy = len(self.queue) > self.config.max_pipelined
        ex = self._parsing
        if ex is not None and ex._queued > self.config.stream_buffer_bytes and not ex._reading:
            busy = True  # a streaming handler does not take the body (read_body takes it all, up to its limit)
        if busy and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        elif not busy and self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()

    # ---- output ----

    def render_head(self, ex: Exchange, status: int, headers: Headers, extra: Headers, keep: bool) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "status code " + str(status)
        lines = [f"HTTP/1.1 {status} {reason}"]
        has_connection = False
        for name, value in headers:
            if name == "Connection":
                has_connection = True
            lines.append(f"{name}: {value}")
        lines.append("Date: " + _date.get())
        lines.extend(f"{name}: {value}" for name, value in extra)
        if not has_connection:
            if not keep:
                lines.append("Connection: close")
            elif ex.request.version == "1.0":
                lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    async def drained(self) -> None:
        """Returns once the socket takes more (at once unless the transport paused writing)."""
        while self._write_paused and not self.closed:
            fut = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # ---- the end ----

    def shutdown(self) -> None:
        """Graceful: what was already dispatched is answered, nothing more is read, then the connection ends."""
        self._stopped = True
        self.closing = True
        while len(self.queue) > 1:
            self.queue.pop()._lost()
        if not self.queue:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.connection_lost()
        with contextlib.suppress(Exception):
            self.transport.close()
        if self._on_close is not None:
            self._on_close()

    def connection_lost(self) -> None:
        """The socket is gone: every exchange is ended, every handler cancelled."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue, self.queue = list(self.queue), deque()
        for ex in queue:
            ex._lost()
        self.resume_writing()

    # ---- timers ----

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(max(delay, 0.01), self._tick)

    def _wake_by(self, deadline: float) -> None:
        """Makes the timer look no later than deadline (it finds out itself what is due)."""
        timer = self._timer
        if self.closed or (timer is not None and timer.when() <= deadline):
            return
        if timer is not None:
            timer.cancel()
        self._arm(deadline - self.loop.time())

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        cfg = self.config
        now = self.loop.time()
        deadlines: list[float] = []
        if self._head_since is not None:
            if now - self._head_since >= cfg.header_timeout:
                log.debug("closing a connection whose request head did not arrive in time")
                self._timeout()
                return
            deadlines.append(self._head_since + cfg.header_timeout)
        head = self.queue[0] if self.queue else None
        if head is not None and head._reading and not head._body_done:
            if now - self._progress >= cfg.body_timeout:
                log.debug("closing a connection whose request body stopped arriving")
                self._timeout()
                return
            deadlines.append(self._progress + cfg.body_timeout)
        if head is None and self._parsing is None and self._head_since is None:
            if now - self._idle_since >= cfg.idle_timeout:
                log.debug("closing an idle HTTP/1.1 connection")
                self.close()
                return
            deadlines.append(self._idle_since + cfg.idle_timeout)
        # otherwise a handler owns the connection (a streamed response may last as long as it likes);
        # look again within a second of any deadline that new bytes may set
        self._arm(min([*deadlines, now + min(cfg.header_timeout, cfg.body_timeout, cfg.idle_timeout)]) - now)

    def _timeout(self) -> None:
        head = self.queue[0] if self.queue else None
        if head is None or (head.dispatched and not head.started and head is self._parsing):
            self._stopped = True
            if head is not None:
                head._lost()
                self.queue.popleft()
            self.write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Connection: close\r\nContent-Length: 19\r\n\r\n408 Request Timeout"
            )
        self.close()


def not_served(exchange: Exchange) -> None:
    """The app of a port that serves no HTTP/1.1 (Go's answer to a path nobody handles)."""
    exchange.respond(
        404,
        [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")],
        b"404 page not found\n",
    )
