"""The asyncio Protocol of one client connection: tells HTTP/2 from HTTP/1.1, drives the sans-I/O
objects, writes once per event-loop turn, and closes idle and half-open connections.

Bytes that begin with the HTTP/2 preface go to an ``H2Connection`` and a ``GrpcSession``; anything
else to an ``Http1Session`` (as etcd's cmux splits its client port). Over TLS the handshake's ALPN
decides instead (``http/1.1`` goes to HTTP/1.1 at once, ``h2`` must then send the preface); a
client that offered no ALPN is told apart by its first bytes as above. The client's verified
certificate, if any, is handed to the gRPC session (``ServerCall.peer_certificate``). Output is never written from
inside event processing: whatever becomes ready during one turn of the loop (responses of many
streams, window updates, pings) is written by one ``transport.write`` scheduled for the next turn.
While the transport is paused (its buffer is full), nothing more is taken from the connection and
streaming writes wait (``GrpcSession.paused``).

Timers (one ``call_later`` at a time): a connection with no open stream and no stream opened or
closed for ``idle_timeout`` seconds is told GOAWAY and closed; one that sent nothing for
``keepalive_interval`` seconds while streams are open is pinged and closed if it still sends
nothing within ``keepalive_timeout`` (a vanished client, or one stalled mid-frame, never leaves
its handlers behind). The first bytes must arrive within ``idle_timeout`` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from frontend.grpc import GrpcSession, Method
from frontend.grpc._session import ErrorStatus
from frontend.http1 import Http1App, Http1Config, Http1Session
from frontend.http2 import PREFACE, ErrorCode, H2Connection

if TYPE_CHECKING:
    from frontend.server import FrontendServer

log = logging.getLogger("raftkv.frontend")


@dataclass(frozen=True)
class FrontendConfig:
    max_receive_message_length: int = 4 << 20
    max_concurrent_streams: int = 1000
    initial_window_size: int = 1 << 20
    connection_window_size: int = 16 << 20
    max_header_list_size: int = 16 << 10
    idle_timeout: float = 300.0
    keepalive_interval: float = 60.0
    keepalive_timeout: float = 20.0
    http1: Http1Config = field(default_factory=Http1Config)


class ClientProtocol(asyncio.Protocol):
    def __init__(
        self,
        server: FrontendServer | None,
        methods: Mapping[bytes, Method],
        config: FrontendConfig,
        http1: Http1App,
        error_status: ErrorStatus | None = None,
        services: frozenset[str] = frozenset(),
    ) -> None:
        self.server = server
        self.methods = methods
        self.config = config
        self.http1_app = http1
        self.error_status = error_status
        self.services = services
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.h2: H2Connection | None = None
        self.grpc: GrpcSession | None = None
        self.http1: Http1Session | None = None
        self._sniffed = b""
        self._flush_scheduled = False
        self._paused = False
        self._closed = False
        self._received = False  # bytes arrived since the last timer check
        self._activity = 0  # streams opened or closed, as seen at the last check
        self._idle_since = 0.0
        self._pinged_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._peer_cert: dict | None = None

    # ---- asyncio callbacks ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._idle_since = self.loop.time()
        if self.server is not None:
            self.server.connections.add(self)
        self._arm(min(self.config.idle_timeout, self.config.keepalive_interval))
        tls = transport.get_extra_info("ssl_object")
        if tls is not None:
            self._peer_cert = tls.getpeercert() or None
            if tls.selected_alpn_protocol() == "http/1.1":
                self._start_http1(b"")

    def data_received(self, data: bytes) -> None:
        self._received = True
        h2 = self.h2
        if h2 is not None:
            self.grpc.handle(h2.receive_data(data))  # type: ignore[union-attr]
            return
        if self.http1 is not None:
            self.http1.feed(data)
            return
        sniffed = self._sniffed + data
        n = min(len(sniffed), len(PREFACE))
        if sniffed[:n] == PREFACE[:n]:
            if n < len(PREFACE):
                self._sniffed = sniffed
                return
            self._start_h2(sniffed)
        else:
            self._sniffed = b""
            self._start_http1(sniffed)

    def pause_writing(self) -> None:
        self._paused = True
        if self.grpc is not None:
            self.grpc.paused = True
        if self.http1 is not None:
            self.http1.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        if self.grpc is not None:
            self.grpc.resume()
        if self.http1 is not None:
            self.http1.resume_writing()
        self.schedule_flush()

    def eof_received(self) -> bool | None:
        return None  # close at once: a half-closed client cannot read answers to nothing

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.grpc is not None:
            self.grpc.connection_lost()
        if self.http1 is not None:
            self.http1.connection_lost()
        if self.server is not None:
            self.server.connections.discard(self)
            self.server.connection_closed()

    # ---- HTTP/2 ----

    def _start_h2(self, data: bytes) -> None:
        cfg = self.config
        self.h2 = H2Connection(
            max_concurrent_streams=cfg.max_concurrent_streams,
            initial_window_size=cfg.initial_window_size,
            connection_window_size=cfg.connection_window_size,
            max_header_list_size=cfg.max_header_list_size,
        )
        self.grpc = GrpcSession(
            self.h2,
            self.methods,
            loop=self.loop,
            max_receive_message_length=cfg.max_receive_message_length,
            on_output=self.schedule_flush,
            error_status=self.error_status,
            services=self.services,
        )
        self.grpc.paused = self._paused
        self.grpc.peer_cert = self._peer_cert
        self.schedule_flush()  # our SETTINGS
        self.grpc.handle(self.h2.receive_data(data))

    def schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        h2 = self.h2
        transport = self.transport
        if h2 is None or transport is None or self._closed:
            return
        if not self._paused or h2.terminated:
            data = h2.data_to_send()
            if data:
                transport.write(data)
        if h2.terminated or (h2.goaway_sent is not None and not h2.open_streams and not h2.has_data_to_send):
            self._close_transport()

    def shutdown(self) -> None:
        """Graceful: GOAWAY, streams already open finish, then the connection closes."""
        if self.h2 is not None:
            self.h2.close(ErrorCode.NO_ERROR)
            self.schedule_flush()
        elif self.http1 is not None:
            self.http1.shutdown()
        else:
            self._close_transport()

    def abort(self) -> None:
        """End now: every handler is cancelled and the socket closed."""
        if self.grpc is not None:
            self.grpc.connection_lost()
        if self.http1 is not None:
            self.http1.close()
        if self.h2 is not None and not self.h2.terminated:
            self.h2.close(ErrorCode.NO_ERROR)
            data = self.h2.data_to_send()
            if data and self.transport is not None:
                self.transport.write(data)
        self._close_transport()

    @property
    def open_streams(self) -> int:
        return self.h2.open_streams if self.h2 is not None else 0

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # ---- HTTP/1.1 ----

    def _start_http1(self, data: bytes) -> None:
        """From here on the connection is HTTP/1.1: the session has its own timers and closes the socket itself."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else None
        self.http1 = Http1Session(self.http1_app, transport, self.loop, self.config.http1, remote)
        if self._paused:
            self.http1.pause_writing()
        if data:
            self.http1.feed(data)

    # ---- timers ----

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._closed or self.http1 is not None:
            return
        cfg = self.config
        now = self.loop.time()
        received, self._received = self._received, False
        h2 = self.h2
        streams = self.open_streams
        activity = h2.last_stream_id + streams if h2 is not None else 0
        if streams or activity != self._activity:
            self._idle_since = now
        self._activity = activity
        if not streams and now - self._idle_since >= cfg.idle_timeout:
            log.debug("closing an idle connection")
            if h2 is not None:
                h2.close(ErrorCode.NO_ERROR)
                self._flush()  # writes the GOAWAY (and closes: no stream is open)
            self._close_transport()
            return
        if received:
            self._pinged_at = None
        elif streams and h2 is not None:
            if self._pinged_at is None:
                self._pinged_at = now
                h2.ping(b"raftkvka")
                self.schedule_flush()
            elif now - self._pinged_at >= cfg.keepalive_timeout:
                log.debug("closing a connection that does not answer pings")
                self.abort()
                return
        wait = cfg.keepalive_timeout if self._pinged_at is not None else cfg.keepalive_interval
        self._arm(min(wait, cfg.idle_timeout))
