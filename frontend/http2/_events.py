"""What the HTTP/2 connection reports to its user: frozen event records, one per thing that happened."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new stream's request headers, already validated (RFC 9113 §8.3). ``request`` is the parsed
    header block (``frontend.http2.Request``), shared between equal blocks of one connection."""

    stream_id: int
    request: object


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes of a stream. ``flow_length`` is what they cost in flow control (padding included);
    the receiver gives it back with ``acknowledge`` once it has consumed the data."""

    stream_id: int
    data: bytes
    flow_length: int


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer finished sending on a stream (END_STREAM on its request headers, data or trailers)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone: reset by the peer (``remote``) or by this side after a stream error."""

    stream_id: int
    error_code: int
    remote: bool


@dataclass(frozen=True, slots=True)
class StreamDrained:
    """Everything queued for the stream has been framed (its flow-control windows opened)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PingAcknowledged:
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """GOAWAY, received from the peer (``remote``) or sent by this side after a connection error."""

    error_code: int
    last_stream_id: int
    message: str
    remote: bool
