"""A test client for the sans-I/O connection: builds frames byte by byte, reads back what the server sent."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import hpack

from frontend.http2 import PREFACE, H2Connection
from frontend.http2 import _frames as f


@dataclass
class Frame:
    type: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        if self.type == f.GOAWAY:
            return struct.unpack(">LL", self.payload[:8])[1]
        assert self.type == f.RST_STREAM
        return struct.unpack(">L", self.payload)[0]


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return f.header(len(payload), frame_type, flags, stream_id) + payload


def settings(**values: int) -> bytes:
    ids = {
        "header_table_size": f.SETTINGS_HEADER_TABLE_SIZE,
        "enable_push": f.SETTINGS_ENABLE_PUSH,
        "max_concurrent_streams": f.SETTINGS_MAX_CONCURRENT_STREAMS,
        "initial_window_size": f.SETTINGS_INITIAL_WINDOW_SIZE,
        "max_frame_size": f.SETTINGS_MAX_FRAME_SIZE,
    }
    payload = b"".join(struct.pack(">HL", ids[k], v) for k, v in values.items())
    return frame(f.SETTINGS, 0, 0, payload)


def parse(data: bytes) -> list[Frame]:
    out = []
    pos = 0
    while pos < len(data):
        length, frame_type, flags, sid = f.parse_header(data, pos)
        out.append(Frame(frame_type, flags, sid, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    assert pos == len(data), "a partial frame in the output"
    return out


GRPC_REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/test.Echo/Unary"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class Peer:
    """The client side: an hpack encoder and decoder, and the server connection it talks to."""

    def __init__(self, conn: H2Connection | None = None, **client_settings: int) -> None:
        self.conn = conn or H2Connection()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.events: list[object] = []
        self.frames: list[Frame] = []
        self.handshake(**client_settings)

    def handshake(self, **client_settings: int) -> None:
        self.send(PREFACE + settings(**client_settings))
        self.read()

    def send(self, data: bytes) -> list[object]:
        events = self.conn.receive_data(data)
        self.events += events
        return events

    def read(self) -> list[Frame]:
        frames = parse(self.conn.data_to_send())
        self.frames += frames
        return frames

    def block(self, headers: list[tuple[str, str]] | None = None, **extra: str) -> bytes:
        fields = list(headers if headers is not None else GRPC_REQUEST)
        fields += list(extra.items())
        return self.encoder.encode(fields)

    def headers(self, stream_id: int, block: bytes | None = None, end_stream: bool = False) -> list[object]:
        block = self.block() if block is None else block
        flags = f.FLAG_END_HEADERS | (f.FLAG_END_STREAM if end_stream else 0)
        return self.send(frame(f.HEADERS, flags, stream_id, block))

    def data(self, stream_id: int, payload: bytes, end_stream: bool = False) -> list[object]:
        return self.send(frame(f.DATA, f.FLAG_END_STREAM if end_stream else 0, stream_id, payload))

    def decode(self, fr: Frame) -> list[tuple[str, str]]:
        payload = fr.payload
        return [(str(k), str(v)) for k, v in self.decoder.decode(payload)]
