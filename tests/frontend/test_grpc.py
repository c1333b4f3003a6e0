"""The gRPC layer fed bytes: dispatch, statuses and trailers, deadlines, cancellation, compression,
limits and back-pressure, through a real H2Connection and a GrpcSession on the running loop."""

from __future__ import annotations

import asyncio
import gzip
import struct

import pytest

from frontend.grpc import GrpcError, GrpcSession, Kind, Method, StatusCode, percent_decode, percent_encode
from frontend.grpc._session import QUEUE_BYTES, WRITE_HIGH_WATER
from frontend.http2 import H2Connection
from frontend.http2 import _frames as f
from proto.etcdserverpb import rpc_pb2 as pb
from tests.frontend.peer import GRPC_REQUEST, Peer, frame


def msg(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BL", int(compressed), len(payload)) + payload


class Server:
    """A session over a connection; output is read by the test after letting the loop run."""

    def __init__(self, methods: dict[str, Method], limit: int = 1 << 20, **client_settings: int) -> None:
        self.conn = H2Connection()
        self.session = GrpcSession(
            self.conn,
            {k.encode(): v for k, v in methods.items()},
            loop=asyncio.get_running_loop(),
            max_receive_message_length=limit,
            on_output=lambda: None,
            error_status=lambda exc: (
                (StatusCode.NOT_FOUND, "mapped: " + str(exc)) if isinstance(exc, KeyError) else None
            ),
            services=frozenset({"test.Echo"}),
        )
        self.peer = Peer(self.conn, **client_settings)

    def send(self, data: bytes) -> None:
        self.session.handle(self.conn.receive_data(data))

    def call(self, sid: int, path: str, body: bytes | None, end: bool = True, **headers: str) -> None:
        fields = [(":path", path)] + [(k, v) for k, v in GRPC_REQUEST if k != ":path"] + list(headers.items())
        flags = f.FLAG_END_HEADERS | (f.FLAG_END_STREAM if body is None and end else 0)
        self.send(frame(f.HEADERS, flags, sid, self.peer.encoder.encode(fields)))
        if body is not None:
            self.send(frame(f.DATA, f.FLAG_END_STREAM if end else 0, sid, body))

    def responses(self, sid: int) -> tuple[list[bytes], dict[str, str], bool]:
        """(messages, last headers seen, ended) of a stream from what was sent so far."""
        messages: list[bytes] = []
        headers: dict[str, str] = {}
        ended = False
        buf = b""
        for fr in self.peer.frames:
            if fr.stream_id != sid:
                continue
            if fr.type == f.HEADERS:
                headers.update(self.peer.decode(fr))
            elif fr.type == f.DATA:
                buf += fr.payload
            ended = ended or bool(fr.flags & f.FLAG_END_STREAM) or fr.type == f.RST_STREAM
        while buf:
            _, n = struct.unpack(">BL", buf[:5])
            messages.append(buf[5 : 5 + n])
            buf = buf[5 + n :]
        return messages, headers, ended

    async def until_ended(self, sid: int) -> tuple[list[bytes], dict[str, str]]:
        while True:
            self.peer.read()
            messages, headers, ended = self.responses(sid)
            if ended:
                return messages, headers
            await asyncio.sleep(0)


def echo(request: pb.RangeRequest, call: object) -> pb.RangeResponse:
    if request.key == b"fail":
        raise GrpcError(StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    if request.key == b"mapped":
        raise KeyError("k")
    if request.key == b"boom":
        raise RuntimeError("unexpected")
    return pb.RangeResponse(count=len(request.key))


async def slow(request: pb.RangeRequest, call: object) -> pb.RangeResponse:
    await asyncio.sleep(0)
    return pb.RangeResponse(count=7)


def unary(handler: object) -> Method:
    return Method(Kind.UNARY, handler, pb.RangeRequest.FromString)


RANGE = msg(pb.RangeRequest(key=b"abc").SerializeToString())


async def test_sync_unary_is_answered_without_a_task() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)})
    tasks = len(asyncio.all_tasks())
    srv.call(1, "/test.Echo/Unary", RANGE)
    assert len(asyncio.all_tasks()) == tasks
    srv.peer.read()
    messages, headers, ended = srv.responses(1)
    assert ended and headers["grpc-status"] == "0" and headers[":status"] == "200"
    assert pb.RangeResponse.FromString(messages[0]).count == 3


async def test_async_unary() -> None:
    srv = Server({"/test.Echo/Unary": unary(slow)})
    srv.call(1, "/test.Echo/Unary", RANGE)
    messages, headers = await srv.until_ended(1)
    assert headers["grpc-status"] == "0" and pb.RangeResponse.FromString(messages[0]).count == 7


@pytest.mark.parametrize(
    ("key", "code", "message"),
    [
        (b"fail", StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        (b"mapped", StatusCode.NOT_FOUND, "mapped: 'k'"),
        (b"boom", StatusCode.UNKNOWN, "raftkv: unexpected RuntimeError: unexpected"),
    ],
)
async def test_errors_are_trailers_only(key: bytes, code: int, message: str) -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)})
    srv.call(1, "/test.Echo/Unary", msg(pb.RangeRequest(key=key).SerializeToString()))
    messages, headers = await srv.until_ended(1)
    assert messages == []
    assert headers[":status"] == "200" and headers["content-type"] == "application/grpc"
    assert (int(headers["grpc-status"]), percent_decode(headers["grpc-message"])) == (code, message)


async def test_unknown_service_and_method() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)})
    srv.call(1, "/test.Echo/Nope", RANGE)
    srv.call(3, "/other.Svc/X", RANGE)
    _, h1 = await srv.until_ended(1)
    _, h3 = await srv.until_ended(3)
    assert (h1["grpc-status"], h1["grpc-message"]) == ("12", "unknown method Nope for service test.Echo")
    assert (h3["grpc-status"], h3["grpc-message"]) == ("12", "unknown service other.Svc")


async def test_undecodable_request_is_internal() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)})
    srv.call(1, "/test.Echo/Unary", msg(b"\x0a\x05ab"))
    _, headers = await srv.until_ended(1)
    assert headers["grpc-status"] == "13"
    assert headers["grpc-message"].startswith("grpc: error unmarshalling request: ")


async def test_message_over_the_limit_is_refused_from_its_prefix() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)}, limit=100)
    srv.call(1, "/test.Echo/Unary", struct.pack(">BL", 0, 101) + b"x" * 10, end=False)
    _, headers = await srv.until_ended(1)
    assert headers["grpc-status"] == "8"
    assert percent_decode(headers["grpc-message"]) == "grpc: received message larger than max (101 vs. 100)"


async def test_gzip_is_decompressed_and_other_encodings_are_unimplemented() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)})
    body = gzip.compress(pb.RangeRequest(key=b"zipped").SerializeToString())
    srv.call(1, "/test.Echo/Unary", msg(body, compressed=True), **{"grpc-encoding": "gzip"})
    messages, headers = await srv.until_ended(1)
    assert headers["grpc-status"] == "0" and pb.RangeResponse.FromString(messages[0]).count == 6
    srv.call(3, "/test.Echo/Unary", msg(b"x", compressed=True), **{"grpc-encoding": "snappy"})
    _, headers = await srv.until_ended(3)
    assert headers["grpc-status"] == "12" and "snappy" in percent_decode(headers["grpc-message"])
    srv.call(5, "/test.Echo/Unary", msg(b"x", compressed=True))
    _, headers = await srv.until_ended(5)
    assert headers["grpc-status"] == "13"


async def test_gzip_bomb_is_stopped_at_the_limit() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)}, limit=1000)
    bomb = gzip.compress(b"\0" * 100_000)
    srv.call(1, "/test.Echo/Unary", msg(bomb, compressed=True), **{"grpc-encoding": "gzip"})
    _, headers = await srv.until_ended(1)
    assert headers["grpc-status"] == "8" and "after decompression" in percent_decode(headers["grpc-message"])


async def test_no_request_message_is_internal() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)})
    srv.call(1, "/test.Echo/Unary", None)
    _, headers = await srv.until_ended(1)
    assert headers["grpc-status"] == "13"


async def test_deadline_cancels_the_handler() -> None:
    seen: list[str] = []

    async def forever(request: pb.RangeRequest, call: object) -> pb.RangeResponse:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        raise AssertionError("unreachable")

    srv = Server({"/test.Echo/Unary": unary(forever)})
    srv.call(1, "/test.Echo/Unary", RANGE, **{"grpc-timeout": "5m"})
    _, headers = await srv.until_ended(1)
    assert (headers["grpc-status"], headers["grpc-message"]) == ("4", "context deadline exceeded")
    while not seen:
        await asyncio.sleep(0)
    assert seen == ["cancelled"]


async def test_malformed_timeout() -> None:
    srv = Server({"/test.Echo/Unary": unary(echo)})
    srv.call(1, "/test.Echo/Unary", RANGE, **{"grpc-timeout": "forever"})
    _, headers = await srv.until_ended(1)
    assert headers["grpc-status"] == "13"


async def test_client_reset_cancels_a_streaming_handler_and_connection_loss_too() -> None:
    cancelled: list[int] = []

    async def watch(call: object) -> None:
        try:
            async for _ in call:  # type: ignore[attr-defined]
                pass
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(call.stream_id)  # type: ignore[attr-defined]
            raise

    srv = Server({"/test.Echo/Watch": Method(Kind.BIDI, watch, pb.WatchRequest.FromString)})
    srv.call(1, "/test.Echo/Watch", None, end=False)
    srv.call(3, "/test.Echo/Watch", None, end=False)
    await asyncio.sleep(0)
    srv.send(frame(f.RST_STREAM, 0, 1, b"\0\0\0\x08"))
    while cancelled != [1]:
        await asyncio.sleep(0)
    srv.session.connection_lost()
    while cancelled != [1, 3]:
        await asyncio.sleep(0)
    assert not srv.session.calls


async def test_metadata_reaches_the_handler() -> None:
    seen: dict[str, object] = {}

    def handler(request: pb.RangeRequest, call: object) -> pb.RangeResponse:
        seen["hasleader"] = call.metadata("hasleader")  # type: ignore[attr-defined]
        seen["token"] = call.metadata("token")  # type: ignore[attr-defined]
        seen["missing"] = call.metadata("nothing")  # type: ignore[attr-defined]
        return pb.RangeResponse()

    srv = Server({"/test.Echo/Unary": unary(handler)})
    srv.call(1, "/test.Echo/Unary", RANGE, hasleader="true", token="secret")
    assert seen == {"hasleader": "true", "token": "secret", "missing": None}


async def test_bidi_echo_and_server_writes_wait_for_the_clients_window() -> None:
    written: list[int] = []

    async def pump(call: object) -> None:
        async for req in call:  # type: ignore[attr-defined]
            for i in range(req.create_request.start_revision):
                await call.write(pb.WatchResponse(watch_id=i, cancel_reason="x" * 100_000))  # type: ignore[attr-defined]
                written.append(i)

    srv = Server({"/test.Echo/Watch": Method(Kind.BIDI, pump, pb.WatchRequest.FromString)}, initial_window_size=1)
    req = pb.WatchRequest(create_request=pb.WatchCreateRequest(start_revision=10)).SerializeToString()
    srv.call(1, "/test.Echo/Watch", msg(req), end=False)
    for _ in range(50):  # the handler runs as far as it can
        await asyncio.sleep(0)
    # with a 1-byte window nothing drains: writes stop once the queue passes the high-water mark
    assert 0 < len(written) <= WRITE_HIGH_WATER // 100_000
    assert srv.conn.outbound_pending(1) > WRITE_HIGH_WATER
    assert not srv.session.calls[1].task.done()  # the handler waits in write
    srv.send(frame(f.WINDOW_UPDATE, 0, 1, struct.pack(">L", 2**31 - 2)))
    srv.send(frame(f.WINDOW_UPDATE, 0, 0, struct.pack(">L", 2**31 - 2 - 65_535)))
    srv.send(frame(f.DATA, f.FLAG_END_STREAM, 1, b""))
    messages, headers = await srv.until_ended(1)
    assert written == list(range(10)) and len(messages) == 10 and headers["grpc-status"] == "0"


async def test_requests_a_handler_does_not_read_are_held_by_flow_control() -> None:
    release = asyncio.Event()

    async def lazy(call: object) -> None:
        await release.wait()
        async for _ in call:  # type: ignore[attr-defined]
            pass

    srv = Server({"/test.Echo/Watch": Method(Kind.BIDI, lazy, pb.WatchRequest.FromString)})
    srv.call(1, "/test.Echo/Watch", None, end=False)
    one = msg(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=1)).SerializeToString())
    chunk = one * (16_000 // len(one))
    sent = 0
    while sent < QUEUE_BYTES + 200_000:
        srv.send(frame(f.DATA, 0, 1, chunk))
        sent += len(chunk)
    srv.peer.read()
    given_back = sum(
        struct.unpack(">L", fr.payload)[0] for fr in srv.peer.frames if fr.type == f.WINDOW_UPDATE and fr.stream_id == 1
    )
    assert given_back <= QUEUE_BYTES + len(chunk)  # the rest waits until the handler reads
    release.set()
    while srv.session.calls[1]._queue:
        await asyncio.sleep(0)
    srv.peer.read()
    given_back = sum(
        struct.unpack(">L", fr.payload)[0] for fr in srv.peer.frames if fr.type == f.WINDOW_UPDATE and fr.stream_id == 1
    )
    assert given_back >= sent - (1 << 20) // 2  # all but less than one batch returned


def test_percent_encoding_round_trips() -> None:
    for text in ("plain", "100% sure", "é\n\x00", "etcdserver: key is not provided"):
        encoded = percent_encode(text)
        assert all(0x20 <= ord(c) < 0x7F for c in encoded)
        assert percent_decode(encoded) == text
    assert percent_encode("a%b") == "a%25b"
