"""The sans-I/O HTTP/2 connection fed bytes: the handshake, requests and responses, flow control,
and every kind of bad input answered with the error RFC 9113 names."""

from __future__ import annotations

import struct

import hpack
import pytest

from frontend.http2 import (
    PREFACE,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    H2Connection,
    PingAcknowledged,
    RequestReceived,
    StreamDrained,
    StreamEnded,
    StreamReset,
    encode_block,
)
from frontend.http2 import _frames as f
from frontend.http2._hpack import DYNAMIC, MUTATING, STATIC, RequestDecoder, classify
from tests.frontend.peer import GRPC_REQUEST, Peer, frame, parse, settings

OK = encode_block([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS = encode_block([("grpc-status", "0")])


def of(events: list[object], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def goaway(peer: Peer) -> tuple[int, int]:
    [g] = [fr for fr in peer.read() if fr.type == f.GOAWAY]
    last, code = struct.unpack(">LL", g.payload[:8])
    return last, code


def resets(frames: list) -> dict[int, int]:
    return {fr.stream_id: fr.error_code for fr in frames if fr.type == f.RST_STREAM}


# ---- handshake and a request ----


def test_handshake_sends_settings_window_and_ack() -> None:
    conn = H2Connection(max_concurrent_streams=7, initial_window_size=1 << 20, connection_window_size=1 << 24)
    peer = Peer(conn)
    types = [(fr.type, fr.flags) for fr in peer.frames]
    assert types == [(f.SETTINGS, 0), (f.WINDOW_UPDATE, 0), (f.SETTINGS, f.FLAG_ACK)]
    values = dict(struct.iter_unpack(">HL", peer.frames[0].payload))
    assert values[f.SETTINGS_MAX_CONCURRENT_STREAMS] == 7
    assert values[f.SETTINGS_INITIAL_WINDOW_SIZE] == 1 << 20
    assert struct.unpack(">L", peer.frames[1].payload)[0] == (1 << 24) - 65535


def test_request_and_response_round_trip() -> None:
    peer = Peer()
    events = peer.headers(1)
    [req] = of(events, RequestReceived)
    assert req.request.path == b"/test.Echo/Unary" and req.request.method == b"POST"
    assert req.request.get(b"content-type") == b"application/grpc"
    events = peer.data(1, b"hello", end_stream=True)
    assert [type(e) for e in events] == [DataReceived, StreamEnded]
    assert events[0].data == b"hello"
    conn = peer.conn
    conn.send_headers(1, OK)
    conn.send_data(1, b"world")
    conn.send_trailers(1, TRAILERS)
    frames = peer.read()
    assert [fr.type for fr in frames] == [f.HEADERS, f.DATA, f.HEADERS]
    assert peer.decode(frames[0]) == [(":status", "200"), ("content-type", "application/grpc")]
    assert frames[1].payload == b"world" and not frames[1].flags & f.FLAG_END_STREAM
    assert frames[2].flags & f.FLAG_END_STREAM and peer.decode(frames[2]) == [("grpc-status", "0")]
    assert conn.open_streams == 0


def test_continuation_and_padding() -> None:
    peer = Peer()
    block = peer.block(**{"x-long": "v" * 300})
    first, rest = block[:10], block[10:]
    padded = bytes([4]) + first + b"\0" * 4
    peer.send(frame(f.HEADERS, f.FLAG_PADDED, 1, padded))
    assert not of(peer.events, RequestReceived)
    events = peer.send(frame(f.CONTINUATION, f.FLAG_END_HEADERS, 1, rest))
    [req] = of(events, RequestReceived)
    assert req.request.get(b"x-long") == b"v" * 300
    events = peer.send(frame(f.DATA, f.FLAG_PADDED | f.FLAG_END_STREAM, 1, bytes([3]) + b"abc" + b"\0\0\0"))
    assert [e.data for e in of(events, DataReceived)] == [b"abc"]
    assert of(events, StreamEnded)


def test_priority_is_ignored_but_self_dependency_is_a_stream_error() -> None:
    peer = Peer()
    peer.send(frame(f.PRIORITY, 0, 3, struct.pack(">LB", 1, 16)))
    assert not peer.read() and not peer.conn.terminated
    prio = struct.pack(">LB", 5, 16)
    peer.send(frame(f.HEADERS, f.FLAG_PRIORITY | f.FLAG_END_HEADERS, 5, prio + peer.block()))
    assert resets(peer.read()) == {5: ErrorCode.PROTOCOL_ERROR}
    [req] = of(peer.headers(7), RequestReceived)  # the HPACK state survived
    assert req.request.path == b"/test.Echo/Unary"


# ---- flow control ----


def test_a_window_of_one_byte_is_never_overrun() -> None:
    peer = Peer(initial_window_size=1)
    peer.headers(1, end_stream=True)
    conn = peer.conn
    conn.send_headers(1, OK)
    conn.send_data(1, b"abcdef")
    conn.send_trailers(1, TRAILERS)
    sent = b""
    frames = peer.read()
    assert [fr.type for fr in frames] == [f.HEADERS, f.DATA]
    for i in range(6):
        data = [fr for fr in frames if fr.type == f.DATA]
        assert [len(fr.payload) for fr in data] == [1]
        sent += data[0].payload
        assert conn.outbound_pending(1) == 5 - i
        if i < 5:
            assert not of(peer.events, StreamDrained)
            peer.send(frame(f.WINDOW_UPDATE, 0, 1, struct.pack(">L", 1)))
            frames = peer.read()
    assert sent == b"abcdef"
    assert [fr.type for fr in frames] == [f.DATA, f.HEADERS] and frames[1].flags & f.FLAG_END_STREAM
    assert of(peer.events, StreamDrained)


def test_connection_window_bounds_all_streams() -> None:
    peer = Peer()
    conn = peer.conn
    for sid in (1, 3):
        peer.headers(sid, end_stream=True)
        conn.send_headers(sid, OK)
        conn.send_data(sid, b"x" * 40_000, end_stream=True)
    sent = sum(len(fr.payload) for fr in peer.read() if fr.type == f.DATA)
    assert sent == 65_535  # the peer's connection window
    peer.send(frame(f.WINDOW_UPDATE, 0, 0, struct.pack(">L", 14_465)))
    frames = peer.read()
    assert sum(len(fr.payload) for fr in frames if fr.type == f.DATA) == 14_465
    assert sum(1 for fr in frames if fr.flags & f.FLAG_END_STREAM) == 1
    assert max(len(fr.payload) for fr in frames) <= 16_384


def test_settings_change_of_initial_window_applies_to_open_streams() -> None:
    peer = Peer(initial_window_size=0)
    peer.headers(1, end_stream=True)
    conn = peer.conn
    conn.send_headers(1, OK)
    conn.send_data(1, b"12345", end_stream=True)
    assert [fr.type for fr in peer.read()] == [f.HEADERS]
    peer.send(settings(initial_window_size=3))
    assert [fr.payload for fr in peer.read() if fr.type == f.DATA] == [b"123"]


def test_received_data_is_charged_and_given_back_in_batches() -> None:
    conn = H2Connection(initial_window_size=1000, connection_window_size=65_535)
    peer = Peer(conn)
    peer.headers(1)
    peer.data(1, b"x" * 400)
    conn.acknowledge(1, 400)
    assert not [fr for fr in peer.read() if fr.type == f.WINDOW_UPDATE]  # under half the window
    peer.data(1, b"x" * 200)
    conn.acknowledge(1, 200)
    updates = {fr.stream_id: struct.unpack(">L", fr.payload)[0] for fr in peer.read() if fr.type == f.WINDOW_UPDATE}
    assert updates == {1: 600}
    events = peer.data(1, b"x" * 1001)  # past the stream window (1000 - 600 + 600 = 1000)
    assert resets(peer.read()) == {1: ErrorCode.FLOW_CONTROL_ERROR}
    assert of(events, StreamReset)[0].remote is False


def test_data_past_the_connection_window_is_a_connection_error() -> None:
    conn = H2Connection(initial_window_size=1 << 20, connection_window_size=65_535)
    peer = Peer(conn)
    peer.headers(1)
    for _ in range(4):
        peer.data(1, b"x" * 16_384)
    assert peer.conn.terminated
    assert goaway(peer)[1] == ErrorCode.FLOW_CONTROL_ERROR


def test_window_overflow_and_zero_increment() -> None:
    peer = Peer()
    peer.headers(1)
    peer.send(frame(f.WINDOW_UPDATE, 0, 1, struct.pack(">L", 0)))
    assert resets(peer.read()) == {1: ErrorCode.PROTOCOL_ERROR}
    peer.send(frame(f.WINDOW_UPDATE, 0, 0, struct.pack(">L", 2**31 - 1)))
    assert goaway(peer)[1] == ErrorCode.FLOW_CONTROL_ERROR


# ---- bad input ----


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 30, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"])
def test_invalid_preface(junk: bytes) -> None:
    conn = H2Connection()
    conn.data_to_send()
    events = conn.receive_data(junk)
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == ErrorCode.PROTOCOL_ERROR
    [g] = parse(conn.data_to_send())
    assert g.type == f.GOAWAY and g.error_code == ErrorCode.PROTOCOL_ERROR
    assert conn.receive_data(b"more") == []


def test_first_frame_must_be_settings() -> None:
    conn = H2Connection()
    conn.data_to_send()
    conn.receive_data(PREFACE + frame(f.PING, 0, 0, b"12345678"))
    [g] = parse(conn.data_to_send())
    assert g.error_code == ErrorCode.PROTOCOL_ERROR


def test_oversized_frame() -> None:
    peer = Peer()
    peer.send(f.header(16_385, f.DATA, 0, 1))
    assert goaway(peer)[1] == ErrorCode.FRAME_SIZE_ERROR


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (struct.pack(">HL", f.SETTINGS_ENABLE_PUSH, 2), ErrorCode.PROTOCOL_ERROR),
        (struct.pack(">HL", f.SETTINGS_INITIAL_WINDOW_SIZE, 2**31), ErrorCode.FLOW_CONTROL_ERROR),
        (struct.pack(">HL", f.SETTINGS_MAX_FRAME_SIZE, 100), ErrorCode.PROTOCOL_ERROR),
        (b"\x00\x01\x00", ErrorCode.FRAME_SIZE_ERROR),
    ],
)
def test_bad_settings(payload: bytes, code: ErrorCode) -> None:
    peer = Peer()
    peer.send(frame(f.SETTINGS, 0, 0, payload))
    assert goaway(peer)[1] == code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(f.DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.HEADERS, f.FLAG_END_HEADERS, 0, b"\x82"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.HEADERS, f.FLAG_END_HEADERS, 2, b"\x82"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.PING, 0, 0, b"1234"), ErrorCode.FRAME_SIZE_ERROR),
        (frame(f.PING, 0, 1, b"12345678"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.RST_STREAM, 0, 0, b"\0\0\0\0"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.RST_STREAM, 0, 9, b"\0\0\0\0"), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (frame(f.WINDOW_UPDATE, 0, 9, b"\0\0\0\1"), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (frame(f.DATA, 0, 9, b"x"), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (frame(f.CONTINUATION, f.FLAG_END_HEADERS, 1, b"\x82"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.PUSH_PROMISE, f.FLAG_END_HEADERS, 1, b"\0\0\0\2\x82"), ErrorCode.PROTOCOL_ERROR),
        (frame(f.SETTINGS, f.FLAG_ACK, 0, b"\0" * 6), ErrorCode.FRAME_SIZE_ERROR),
        (frame(f.HEADERS, f.FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff\x7f"), ErrorCode.COMPRESSION_ERROR),
        (frame(f.HEADERS, f.FLAG_PADDED | f.FLAG_END_HEADERS, 1, b"\x09\x82"), ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_connection_errors(data: bytes, code: ErrorCode) -> None:
    peer = Peer()
    events = peer.send(data)
    assert goaway(peer)[1] == code
    assert isinstance(events[-1], ConnectionTerminated) and not events[-1].remote


def test_interrupted_header_block() -> None:
    peer = Peer()
    block = peer.block()
    peer.send(frame(f.HEADERS, 0, 1, block[:5]) + frame(f.PING, 0, 0, b"12345678"))
    assert goaway(peer)[1] == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "extra",
    [
        [("X-Upper", "v")],
        [("connection", "keep-alive")],
        [("te", "gzip")],
        [("bad", "a\r\nb")],
    ],
)
def test_malformed_requests_are_stream_errors(extra: list[tuple[str, str]]) -> None:
    peer = Peer()
    events = peer.headers(1, peer.encoder.encode(GRPC_REQUEST + extra))
    assert not of(events, RequestReceived)
    assert resets(peer.read()) == {1: ErrorCode.PROTOCOL_ERROR}
    assert of(peer.headers(3), RequestReceived)  # the connection goes on


def test_missing_and_misplaced_pseudo_headers() -> None:
    peer = Peer()
    peer.headers(1, peer.encoder.encode([(":method", "POST"), (":scheme", "http")]))
    peer.headers(3, peer.encoder.encode([("a", "b"), (":method", "POST"), (":scheme", "http"), (":path", "/")]))
    peer.headers(5, peer.encoder.encode([*GRPC_REQUEST, (":status", "200")]))
    assert resets(peer.read()) == {
        1: ErrorCode.PROTOCOL_ERROR,
        3: ErrorCode.PROTOCOL_ERROR,
        5: ErrorCode.PROTOCOL_ERROR,
    }


def test_oversized_header_list_gets_431_and_the_hpack_state_survives() -> None:
    conn = H2Connection(max_header_list_size=1000)
    peer = Peer(conn)
    events = peer.headers(1, peer.block(**{"x-big": "v" * 2000}))
    assert not of(events, RequestReceived)
    frames = peer.read()
    assert peer.decode(frames[0]) == [(":status", "431")] and frames[0].flags & f.FLAG_END_STREAM
    assert resets(frames) == {1: ErrorCode.NO_ERROR}
    # the encoder indexed x-big: the next block refers to it and must still decode
    block = peer.block(**{"x-big": "v" * 2000})
    peer.headers(3, block)
    frames = peer.read()
    assert peer.decode(frames[0]) == [(":status", "431")] and frames[0].stream_id == 3
    [req] = of(peer.headers(5, peer.block(**{"x-small": "1"})), RequestReceived)
    assert req.request.get(b"x-small") == b"1"


def test_header_block_bomb_ends_the_connection() -> None:
    conn = H2Connection(max_header_list_size=1000)
    peer = Peer(conn)
    first = peer.encoder.encode([*GRPC_REQUEST, ("x-a", "v" * 3000)])  # indexes x-a (and gets a 431)
    peer.headers(1, first)
    assert not peer.conn.terminated
    peer.read()
    ref = peer.encoder.encode([("x-a", "v" * 3000)])
    assert len(ref) <= 2
    base = peer.encoder.encode(GRPC_REQUEST)
    peer.headers(3, base + ref * 20)
    assert goaway(peer)[1] == ErrorCode.COMPRESSION_ERROR


def test_frames_on_closed_streams() -> None:
    peer = Peer()
    conn = peer.conn
    peer.headers(1, end_stream=True)
    conn.send_headers(1, OK, end_stream=True)  # both sides ended: closed
    peer.read()
    peer.send(frame(f.WINDOW_UPDATE, 0, 1, b"\0\0\0\1") + frame(f.RST_STREAM, 0, 1, b"\0\0\0\0"))
    assert not peer.read() and not conn.terminated  # allowed on a closed stream
    peer.headers(3)
    conn.reset_stream(3)
    peer.read()
    peer.data(3, b"in flight")  # after our RST: ignored
    assert not peer.read()
    peer.headers(5)
    peer.send(frame(f.RST_STREAM, 0, 5, b"\0\0\0\x08"))
    assert of(peer.events, StreamReset)[-1].remote
    peer.data(5, b"after their RST")
    assert resets(peer.read()) == {5: ErrorCode.STREAM_CLOSED}
    peer.data(1, b"after END_STREAM")
    assert goaway(peer)[1] == ErrorCode.STREAM_CLOSED


def test_data_after_end_stream_on_a_half_closed_stream() -> None:
    peer = Peer()
    peer.headers(1, end_stream=True)
    peer.data(1, b"late")
    assert resets(peer.read()) == {1: ErrorCode.STREAM_CLOSED}


def test_stream_ids_must_grow() -> None:
    peer = Peer()
    peer.headers(5)
    peer.headers(3)
    assert goaway(peer)[1] == ErrorCode.PROTOCOL_ERROR


def test_stream_flood_is_refused_past_the_limit() -> None:
    peer = Peer(H2Connection(max_concurrent_streams=3))
    for sid in range(1, 20, 2):
        peer.headers(sid)
    assert len(of(peer.events, RequestReceived)) == 3
    assert resets(peer.read()) == {sid: ErrorCode.REFUSED_STREAM for sid in range(7, 20, 2)}
    peer.send(frame(f.RST_STREAM, 0, 1, b"\0\0\0\x08"))
    assert of(peer.headers(21), RequestReceived)  # a slot was freed


def test_rapid_reset_flood_ends_the_connection() -> None:
    peer = Peer(H2Connection(reset_budget=10))
    for sid in range(1, 40, 2):
        peer.headers(sid)
        peer.send(frame(f.RST_STREAM, 0, sid, b"\0\0\0\x08"))
        if peer.conn.terminated:
            break
    assert goaway(peer)[1] == ErrorCode.ENHANCE_YOUR_CALM


def test_pings_are_answered_at_once_and_a_flood_that_is_not_read_ends() -> None:
    peer = Peer(H2Connection(max_control_bytes=1700))
    peer.send(frame(f.PING, 0, 0, b"abcdefgh"))
    [pong] = peer.read()
    assert pong.type == f.PING and pong.flags & f.FLAG_ACK and pong.payload == b"abcdefgh"
    peer.send(frame(f.PING, f.FLAG_ACK, 0, b"ourping!"))
    assert of(peer.events, PingAcknowledged)[0].data == b"ourping!"
    assert not peer.read()
    peer.send(frame(f.PING, 0, 0, b"12345678") * 200)  # 200 answers not read: 3400 bytes
    frames = peer.read()
    assert frames[-1].type == f.GOAWAY and frames[-1].error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert sum(1 for fr in frames if fr.type == f.PING) < 200


def test_stall_mid_frame_buffers_one_frame_at_most() -> None:
    peer = Peer()
    block = peer.block()
    data = frame(f.HEADERS, f.FLAG_END_HEADERS, 1, block)
    for i in range(len(data) - 1):
        assert peer.send(data[i : i + 1]) == []
    assert len(peer.conn._inbuf) == len(data) - 1
    assert of(peer.send(data[-1:]), RequestReceived)
    assert peer.conn._inbuf == b""


def test_graceful_goaway_finishes_open_streams_and_ignores_new_ones() -> None:
    peer = Peer()
    conn = peer.conn
    peer.headers(1, end_stream=True)
    conn.close()
    assert goaway(peer) == (1, ErrorCode.NO_ERROR)
    assert not of(peer.headers(3), RequestReceived)
    peer.data(3, b"sent before it saw our GOAWAY", end_stream=True)
    peer.send(frame(f.RST_STREAM, 0, 3, b"\0\0\0\x08"))
    assert not peer.conn.terminated and not peer.read()  # ignored
    conn.send_headers(1, OK)
    conn.send_data(1, b"done", end_stream=True)
    assert [fr.type for fr in peer.read()] == [f.HEADERS, f.DATA]
    assert conn.open_streams == 0


def test_peer_goaway_is_reported() -> None:
    peer = Peer()
    events = peer.send(frame(f.GOAWAY, 0, 0, struct.pack(">LL", 0, 0) + b"bye"))
    [t] = of(events, ConnectionTerminated)
    assert t.remote and t.message == "bye" and t.error_code == 0


def test_unknown_frame_types_are_ignored() -> None:
    peer = Peer()
    peer.send(frame(0xEE, 0xFF, 0, b"whatever"))
    assert not peer.read() and not peer.conn.terminated


def test_table_size_setting_is_acknowledged_in_the_next_block() -> None:
    peer = Peer(header_table_size=0)
    peer.headers(1, end_stream=True)
    peer.conn.send_headers(1, OK, end_stream=True)
    [h] = peer.read()
    assert h.payload[:1] == b"\x20"
    peer.decoder.header_table_size = 0
    assert peer.decode(h) == [(":status", "200"), ("content-type", "application/grpc")]


def test_large_header_blocks_are_split_into_continuations() -> None:
    peer = Peer()
    peer.headers(1, end_stream=True)
    big = encode_block([(":status", "200"), ("x-big", "z" * 40_000)])
    peer.conn.send_headers(1, big, end_stream=True)
    frames = peer.read()
    assert [fr.type for fr in frames] == [f.HEADERS, f.CONTINUATION, f.CONTINUATION]
    assert frames[-1].flags & f.FLAG_END_HEADERS and frames[0].flags & f.FLAG_END_STREAM
    assert dict(peer.decoder.decode(b"".join(fr.payload for fr in frames)))["x-big"] == "z" * 40_000


# ---- the header block cache ----


def test_classify_sees_insertions_size_updates_and_dynamic_references() -> None:
    enc = hpack.Encoder()
    assert classify(b"\x82\x86") == STATIC  # :method GET, :scheme http
    first = enc.encode([("x-a", "1")])  # literal with incremental indexing
    assert classify(first) == MUTATING
    again = enc.encode([("x-a", "1")])  # now index 62
    assert again == b"\xbe" and classify(again) == DYNAMIC
    assert classify(b"\x3f\xe1\x1f") == MUTATING  # size update
    assert classify(b"\x10\x01a\x01b") == STATIC  # never-indexed literal, new name
    assert classify(b"\x0f") == MUTATING  # truncated: left to hpack


def test_cache_hits_only_while_the_dynamic_table_is_unchanged() -> None:
    dec = RequestDecoder(16_384)
    enc = hpack.Encoder()
    dec.decode(enc.encode([*GRPC_REQUEST, ("x-v", "one")]))  # the client's table and ours: x-v at 62
    block = encode_block(GRPC_REQUEST) + b"\xbe"  # static pseudo-headers, then dynamic index 62
    assert classify(block) == DYNAMIC
    assert dec.decode(block).get(b"x-v") == b"one"
    hits = dec.hits
    assert dec.decode(block).get(b"x-v") == b"one" and dec.hits == hits + 1
    dec.decode(enc.encode([*GRPC_REQUEST, ("x-w", "two")]))  # inserts: index 62 is now x-w
    shifted = dec.decode(block)
    assert dec.hits == hits + 1  # not from the cache
    assert shifted.get(b"x-w") == b"two" and shifted.get(b"x-v") is None


def test_cache_is_invalidated_by_a_mutating_block_decoded_through_the_connection() -> None:
    peer = Peer()
    enc = peer.encoder
    peer.headers(1, enc.encode([*GRPC_REQUEST, ("x-v", "one")]))
    block = encode_block(GRPC_REQUEST) + b"\xbe"
    [a] = of(peer.headers(3, block), RequestReceived)
    [b] = of(peer.headers(5, block), RequestReceived)
    assert a.request is b.request and a.request.get(b"x-v") == b"one"  # served from the cache
    peer.headers(7, enc.encode([*GRPC_REQUEST, ("x-new", "entry")]))  # both tables move on together
    [c] = of(peer.headers(9, block), RequestReceived)
    assert c.request.get(b"x-new") == b"entry" and c.request.get(b"x-v") is None


def test_static_only_blocks_are_cached_across_table_changes() -> None:
    peer = Peer()
    block = encode_block(GRPC_REQUEST)  # never-indexed literals and static references only
    assert classify(block) == STATIC
    [a] = of(peer.headers(1, block), RequestReceived)
    peer.headers(3, peer.encoder.encode([*GRPC_REQUEST, ("x-new", "entry")]))
    [b] = of(peer.headers(5, block), RequestReceived)
    assert a.request is b.request
