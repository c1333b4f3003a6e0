"""gRPC status codes, this layer's error, and the ``grpc-message`` percent-encoding (PROTOCOL-HTTP2.md)."""

from __future__ import annotations

from enum import IntEnum


class StatusCode(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class GrpcError(Exception):
    """A call ends with this status; handlers may raise it, and this layer raises it for bad requests."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(f"{StatusCode(code).name}: {message}")
        self.code = int(code)
        self.message = message


_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> str:
    """grpc-message encoding: UTF-8, with bytes outside 0x20-0x7E and '%' written as %XX."""
    raw = message.encode("utf-8")
    if all(b in _PLAIN for b in raw):
        return message
    return "".join(chr(b) if b in _PLAIN else f"%{b:02X}" for b in raw)


def percent_decode(value: str) -> str:
    """The inverse of percent_encode (what a client does with grpc-message)."""
    raw = value.encode("ascii", "replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        hex_digits = raw[i + 1 : i + 3]
        if raw[i] == 0x25 and len(hex_digits) == 2 and all(c in b"0123456789abcdefABCDEF" for c in hex_digits):
            out.append(int(hex_digits, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")
