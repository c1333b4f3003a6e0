"""HTTP/2 frame layout (RFC 9113 §4 and §6): type and flag numbers, settings ids, header and frame builders.

Only encoding lives here; the connection (``_connection``) parses as it goes, since what a frame
means depends on the connection's state.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = struct.Struct(">HBBBL")  # 24-bit length as (hi16, lo8), type, flags, stream id (R bit masked)
HEADER_LEN = 9

DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_FRAME_LIMIT = 2**24 - 1
MAX_WINDOW = 2**31 - 1

_U32 = struct.Struct(">L")
_RST = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")


def header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, frame_type, flags, stream_id)


def parse_header(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the frame header at pos; the reserved bit is dropped."""
    hi, lo, frame_type, flags, stream_id = FRAME_HEADER.unpack_from(buf, pos)
    return (hi << 8) | lo, frame_type, flags, stream_id & 0x7FFF_FFFF


def settings(values: dict[int, int]) -> bytes:
    payload = b"".join(_SETTING.pack(k, v) for k, v in values.items())
    return header(len(payload), SETTINGS, 0, 0) + payload


SETTINGS_ACK = header(0, SETTINGS, FLAG_ACK, 0)


def ping(data: bytes, ack: bool) -> bytes:
    return header(8, PING, FLAG_ACK if ack else 0, 0) + data


def window_update(stream_id: int, increment: int) -> bytes:
    return header(4, WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


def rst_stream(stream_id: int, code: int) -> bytes:
    return header(4, RST_STREAM, 0, stream_id) + _RST.pack(code)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return header(8 + len(debug), GOAWAY, 0, 0) + _GOAWAY.pack(last_stream_id, code) + debug


def unpack_u32(buf: bytes | bytearray | memoryview, pos: int) -> int:
    return _U32.unpack_from(buf, pos)[0]


def unpack_setting(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    return _SETTING.unpack_from(buf, pos)  # type: ignore[return-value]


def unpack_goaway(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    return _GOAWAY.unpack_from(buf, pos)  # type: ignore[return-value]
