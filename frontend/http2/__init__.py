"""A sans-I/O HTTP/2 server connection (RFC 9113), with HPACK from the ``hpack`` library.

Feed ``H2Connection.receive_data`` the bytes a socket read; it returns events (``RequestReceived``,
``DataReceived``, ``StreamEnded``, ``StreamReset``, ``StreamDrained``, ``PingAcknowledged``,
``ConnectionTerminated``). Queue responses with ``send_headers``/``send_data``/``send_trailers``
(header blocks from ``encode_block``), give consumed data back with ``acknowledge``, and write what
``data_to_send`` returns.
"""

from frontend.http2._connection import H2Connection
from frontend.http2._errors import ErrorCode, H2Error, LocalUsageError, PeerConnectionError, PeerStreamError
from frontend.http2._events import (
    ConnectionTerminated,
    DataReceived,
    PingAcknowledged,
    RequestReceived,
    StreamDrained,
    StreamEnded,
    StreamReset,
)
from frontend.http2._frames import PREFACE
from frontend.http2._hpack import Request, encode_block

__all__ = [
    "PREFACE",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCode",
    "H2Connection",
    "H2Error",
    "LocalUsageError",
    "PeerConnectionError",
    "PeerStreamError",
    "PingAcknowledged",
    "Request",
    "RequestReceived",
    "StreamDrained",
    "StreamEnded",
    "StreamReset",
    "encode_block",
]
