"""etcd's --max-concurrent-streams on a real member: read, checked, and advertised in the member's
HTTP/2 SETTINGS; a connection past the limit gets REFUSED_STREAM while its open streams go on."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import hpack
import pytest

from frontend.http2 import PREFACE
from frontend.http2 import _frames as f
from kvstore import config
from kvstore.errors import StartupError
from tests.frontend.peer import frame, settings
from tests.procs import RaftkvMember
from tests.unit.test_config_security import parse


def test_the_flag_is_read_and_bounded_as_etcds_uint32() -> None:
    assert parse([]).max_concurrent_streams == 1000
    assert parse(["--max-concurrent-streams=5"]).max_concurrent_streams == 5
    assert parse([], {"ETCD_MAX_CONCURRENT_STREAMS": "7"}).max_concurrent_streams == 7
    assert parse([f"--max-concurrent-streams={config.MAX_UINT32}"]).max_concurrent_streams == config.MAX_UINT32
    for bad in ("0", "-1", str(config.MAX_UINT32 + 1)):
        with pytest.raises(StartupError, match="--max-concurrent-streams must be between 1 and 4294967295"):
            parse([f"--max-concurrent-streams={bad}"])


def read_frame(sock: socket.socket) -> tuple[int, int, int, bytes]:
    head = b""
    while len(head) < 9:
        chunk = sock.recv(9 - len(head))
        assert chunk, "the member closed the connection"
        head += chunk
    length = int.from_bytes(head[:3], "big")
    payload = b""
    while len(payload) < length:
        chunk = sock.recv(length - len(payload))
        assert chunk
        payload += chunk
    return head[3], head[4], struct.unpack(">L", head[5:9])[0] & 0x7FFFFFFF, payload


def server_settings(sock: socket.socket) -> dict[int, int]:
    while True:
        kind, flags, _, payload = read_frame(sock)
        if kind == f.SETTINGS and not flags & f.FLAG_ACK:
            return {
                struct.unpack(">H", payload[i : i + 2])[0]: struct.unpack(">L", payload[i + 2 : i + 6])[0]
                for i in range(0, len(payload), 6)
            }


WATCH_CALL = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/etcdserverpb.Watch/Watch"),
    (":authority", "127.0.0.1"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
REFUSED_STREAM = 0x7


def test_a_member_advertises_the_limit_and_refuses_a_stream_past_it(tmp_path: Path) -> None:
    member = RaftkvMember("m1", tmp_path / "m1", extra=["--max-concurrent-streams=2"]).start()
    try:
        with socket.create_connection(("127.0.0.1", member.port), timeout=10) as sock:
            sock.sendall(PREFACE + settings())
            assert server_settings(sock)[f.SETTINGS_MAX_CONCURRENT_STREAMS] == 2
            encoder = hpack.Encoder()
            for stream_id in (1, 3, 5):  # two watch streams stay open; the third is one too many
                block = encoder.encode(WATCH_CALL)
                sock.sendall(frame(f.HEADERS, f.FLAG_END_HEADERS, stream_id, block))
            sock.sendall(frame(f.PING, 0, 0, b"12345678"))
            refused, pinged = None, False
            while refused is None or not pinged:
                kind, flags, stream_id, payload = read_frame(sock)
                assert kind != f.GOAWAY, payload
                if kind == f.RST_STREAM:
                    refused = (stream_id, struct.unpack(">L", payload)[0])
                elif kind == f.PING and flags & f.FLAG_ACK:
                    pinged = True
            assert refused == (5, REFUSED_STREAM)
        # and the member still serves
        assert member.channel().unary_unary("/etcdserverpb.Maintenance/Status")(b"", timeout=10) is not None
    finally:
        member.stop()
