"""HTTP/2 error codes (RFC 9113 §7) and the errors this package raises, each saying whose fault it is."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:x}"


class H2Error(Exception):
    """Base of this package's errors."""


class PeerConnectionError(H2Error):
    """The peer broke the protocol in a way that ends the connection (RFC 9113 §5.4.1: GOAWAY)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class PeerStreamError(H2Error):
    """The peer broke the protocol on one stream only (RFC 9113 §5.4.2: RST_STREAM)."""

    def __init__(self, stream_id: int, code: ErrorCode, message: str) -> None:
        super().__init__(f"stream {stream_id}: {code.name}: {message}")
        self.stream_id = stream_id
        self.code = code
        self.message = message


class LocalUsageError(H2Error):
    """This side asked for something the protocol does not allow now (e.g. data on a closed stream)."""
