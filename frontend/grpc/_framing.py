"""gRPC message framing: the 5-byte prefix (compressed flag, 32-bit length), incremental reading
with the receive limit, and gzip, the one compression served (as grpc-go's default set).

Wording of the limits is grpc-go's (what etcd's clients see): ``grpc: received message larger
than max (N vs. M)`` for the length in the prefix, checked before the body is buffered, and
``grpc: received message after decompression larger than max (N vs. M)``.
"""

from __future__ import annotations

import struct
import zlib

from frontend.grpc._status import GrpcError, StatusCode

PREFIX = struct.Struct(">BL")
PREFIX_LEN = 5
ENCODINGS = ("identity", "gzip")


def too_large(size: int, limit: int) -> GrpcError:
    """grpc-go's refusal of a message over the receive limit (the gateway gives it too)."""
    return GrpcError(StatusCode.RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({size} vs. {limit})")


def frame(payload: bytes) -> bytes:
    return PREFIX.pack(0, len(payload)) + payload


def decoder_for(encoding: str | None) -> str | None:
    """The message encoding of a request's grpc-encoding header; GrpcError(UNIMPLEMENTED) if not served."""
    if encoding is None or encoding == "identity":
        return None
    if encoding == "gzip":
        return "gzip"
    raise GrpcError(StatusCode.UNIMPLEMENTED, f'grpc: Decompressor is not installed for grpc-encoding "{encoding}"')


def gunzip(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise GrpcError(StatusCode.INTERNAL, f"grpc: failed to decompress the received message: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        size = len(out) + len(d.unconsumed_tail)  # at least; the exact size is not worth inflating for
        raise GrpcError(
            StatusCode.RESOURCE_EXHAUSTED,
            f"grpc: received message after decompression larger than max ({size} vs. {limit})",
        )
    if not d.eof:
        raise GrpcError(StatusCode.INTERNAL, "grpc: failed to decompress the received message: truncated gzip")
    return out


class MessageReader:
    """Splits a stream's DATA into messages; at most one partial message is buffered (under the limit)."""

    __slots__ = ("_buf", "_need", "encoding", "limit")

    def __init__(self, limit: int, encoding: str | None) -> None:
        self.limit = limit
        self.encoding = encoding
        self._buf = b""
        self._need = 0  # body bytes of the current message once its prefix is read, else 0

    @property
    def partial(self) -> bool:
        return bool(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= PREFIX_LEN:
            flag, length = PREFIX.unpack_from(buf, pos)
            if length > self.limit:
                raise too_large(length, self.limit)
            if end - pos - PREFIX_LEN < length:
                break
            body = buf[pos + PREFIX_LEN : pos + PREFIX_LEN + length]
            pos += PREFIX_LEN + length
            if flag == 1:
                if self.encoding is None:
                    raise GrpcError(
                        StatusCode.INTERNAL,
                        "grpc: compressed flag set with identity or empty encoding",
                    )
                body = gunzip(body, self.limit)
            elif flag != 0:
                raise GrpcError(StatusCode.INTERNAL, f"grpc: invalid compressed flag {flag}")
            out.append(body)
        self._buf = buf[pos:] if pos < end else b""
        return out
