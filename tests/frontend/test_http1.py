"""The HTTP/1.1 session fed bytes over an in-memory transport: pipelining, chunked bodies both ways,
Expect: 100-continue, limits, the header, body and idle timers (slowloris), back-pressure, the end
of a connection. Answers are parsed back with httptools' response parser."""

from __future__ import annotations

import asyncio

import httptools
import pytest

from frontend.http1 import Exchange, ExchangeClosed, Http1Config, Http1Session
from tests.virtual_time import on_virtual_time


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.out += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Responses:
    """Parses what the session wrote: (status, headers, body) per response, 1xx included."""

    def __init__(self, data: bytes, head: bool = False) -> None:
        self.items: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        parser = httptools.HttpResponseParser(self)
        self._parser = parser
        parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.items.append((self._parser.get_status_code(), self._headers, bytes(self._body)))


async def echo(ex: Exchange) -> None:
    """Answers with the method, target and body it read."""
    body = ex.body() if ex.body_complete else await ex.read_body()
    ex.respond(200, [("Content-Type", "text/plain")], f"{ex.request.method} {ex.request.target} ".encode() + body)


def sync_or_echo(ex: Exchange) -> object:
    if ex.body_complete and ex.request.path == "/sync":
        ex.respond(200, [], b"sync:" + ex.body())
        return None
    return echo(ex)


def session(app: object = sync_or_echo, **config: object) -> tuple[Http1Session, FakeTransport]:
    transport = FakeTransport()
    return Http1Session(app, transport, asyncio.get_running_loop(), Http1Config(**config)), transport  # type: ignore[arg-type]


async def settle(turns: int = 5) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(condition: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


async def test_pipelined_requests_are_answered_in_order() -> None:
    s, t = session()
    s.feed(
        b"POST /slow HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /sync HTTP/1.1\r\nContent-Length: 2\r\n\r\nxy"
        b"GET /c?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    await settle()
    items = Responses(bytes(t.out)).items
    assert [(status, body) for status, _, body in items] == [
        (200, b"POST /slow abc"),
        (200, b"sync:xy"),
        (200, b"GET /c?q=1 "),
    ]
    assert all("connection" not in headers for _, headers, _ in items)
    assert not t.closed


async def test_a_body_that_comes_in_pieces_and_chunked_bodies() -> None:
    s, t = session()
    s.feed(b"POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\nhel")
    await settle()
    assert t.out == b""
    s.feed(b"lo wo")
    s.feed(b"rld")
    s.feed(b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await settle()
    s.feed(b"2\r\nde\r\n0\r\n\r\n")
    await settle()
    assert [body for _, _, body in Responses(bytes(t.out)).items] == [b"POST /a hello world", b"POST /b abcde"]


async def test_streamed_responses_are_chunked_and_wait_for_the_socket() -> None:
    written = []

    async def stream(ex: Exchange) -> None:
        ex.start(200, [("Content-Type", "application/json")])
        for i in range(3):
            await ex.write(b"line %d\n" % i)
            written.append(i)
        ex.end(b"last")

    s, t = session(stream)
    s.pause_writing()
    s.feed(b"POST /w HTTP/1.1\r\n\r\n")
    await settle()
    assert written == []  # the first write waits for the socket
    s.resume_writing()
    await settle()
    assert written == [0, 1, 2]
    ((status, headers, body),) = Responses(bytes(t.out)).items
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"line 0\nline 1\nline 2\nlast"


async def test_http_1_0_gets_a_body_delimited_by_closing() -> None:
    async def stream(ex: Exchange) -> None:
        ex.start(200)
        await ex.write(b"abc")
        ex.end()

    s, t = session(stream)
    s.feed(b"POST /w HTTP/1.0\r\n\r\n")
    await settle()
    assert t.out.endswith(b"\r\n\r\nabc") and b"Transfer-Encoding" not in t.out and b"Connection: close" in t.out
    assert t.closed


async def test_expect_100_continue_is_answered_when_the_app_reads_the_body() -> None:
    s, t = session()
    s.feed(b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    await settle()
    assert t.out == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.feed(b"ok")
    await settle()
    assert Responses(bytes(t.out)).items[-1][2] == b"POST /a ok"
    assert not t.closed


async def test_a_request_answered_without_its_awaited_body_closes_the_connection() -> None:
    def refuse(ex: Exchange) -> None:
        ex.respond(404, [], b"no")

    s, t = session(refuse)
    s.feed(b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    await settle()
    assert b"100 Continue" not in t.out
    ((status, headers, _),) = Responses(bytes(t.out)).items
    assert status == 404 and headers["connection"] == "close"
    assert t.closed


async def test_an_unknown_expectation_is_417() -> None:
    s, t = session()
    s.feed(b"POST /a HTTP/1.1\r\nExpect: something\r\nContent-Length: 2\r\n\r\nok")
    await settle()
    assert Responses(bytes(t.out)).items[0][0] == 417
    assert t.closed


async def test_body_limits_refuse_with_413_and_end_the_connection() -> None:
    s, t = session(max_body_bytes=10)
    s.feed(b"POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
    await settle()
    assert Responses(bytes(t.out)).items[0][0] == 413 and t.closed
    s, t = session(max_body_bytes=10)  # a chunked body that grows past the limit
    s.feed(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n")
    await settle()
    s.feed(b"8\r\n12345678\r\n")
    await settle()
    assert Responses(bytes(t.out)).items[0][0] == 413 and t.closed


async def test_header_limit_is_431() -> None:
    s, t = session(max_header_bytes=100)
    s.feed(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 200 + b"\r\n\r\n")
    await settle()
    ((status, _headers, body),) = Responses(bytes(t.out)).items
    assert (status, body) == (431, b"431 Request Header Fields Too Large")
    assert t.closed


@pytest.mark.parametrize(
    "junk",
    [
        b"NOT-HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_what_does_not_parse_is_go_s_400(junk: bytes) -> None:
    s, t = session()
    s.feed(junk)
    await settle()
    ((status, headers, body),) = Responses(bytes(t.out)).items
    assert (status, body, headers["connection"]) == (400, b"400 Bad Request", "close")
    assert t.closed


async def test_a_bad_request_after_good_ones_is_answered_after_them() -> None:
    s, t = session()
    s.feed(b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGARBAGE\r\n\r\n")
    await settle()
    assert [status for status, _, _ in Responses(bytes(t.out)).items] == [200, 400]


async def test_connection_close_ends_after_the_answer() -> None:
    s, t = session()
    s.feed(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    await settle()
    items = Responses(bytes(t.out)).items
    assert len(items) == 1 and items[0][1]["connection"] == "close"
    assert t.closed


async def test_head_gets_no_body() -> None:
    def app(ex: Exchange) -> None:
        ex.respond(200, [], b"hello")

    s, t = session(app)
    s.feed(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    await settle()
    assert t.out.count(b"Content-Length: 5") == 2
    assert t.out.count(b"hello") == 1


async def test_a_websocket_or_h2c_upgrade_is_answered_as_plain_http_then_closed() -> None:
    def app(ex: Exchange) -> None:
        ex.respond(200, [], b"plain")

    s, t = session(app)
    s.feed(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    await settle()
    ((status, _, body),) = Responses(bytes(t.out)).items
    assert (status, body) == (200, b"plain")
    assert t.closed


async def test_slowloris_headers_are_cut_at_the_header_timeout() -> None:
    s, t = session(header_timeout=0.3)
    s.feed(b"GET / HTTP/1.1\r\n")
    for _ in range(20):  # one byte at a time, forever: progress does not extend the deadline
        if t.closed:
            break
        s.feed(b"X")
        await asyncio.sleep(0.05)
    await until(lambda: t.closed)
    ((status, _, _),) = Responses(bytes(t.out)).items
    assert status == 408


async def test_a_body_that_stops_arriving_is_cut_at_the_body_timeout() -> None:
    s, t = session(body_timeout=0.2)
    s.feed(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    await until(lambda: t.closed)
    assert Responses(bytes(t.out)).items[0][0] == 408


async def test_idle_keepalive_connections_are_closed() -> None:
    s, t = session(idle_timeout=0.2)
    s.feed(b"GET /a HTTP/1.1\r\n\r\n")
    await until(lambda: bool(t.out))
    await until(lambda: t.closed)
    assert len(Responses(bytes(t.out)).items) == 1


@on_virtual_time
async def test_a_streaming_handler_is_not_cut_by_the_timers() -> None:
    release = asyncio.Event()

    async def stream(ex: Exchange) -> None:
        ex.start(200)
        await release.wait()
        await ex.write(b"late")
        ex.end()

    s, t = session(stream, idle_timeout=0.05, header_timeout=0.05, body_timeout=0.05)
    s.feed(b"POST /w HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    await asyncio.sleep(0.3)  # virtual time: every timer due in six timeouts' time has run
    assert not t.closed
    release.set()
    await until(lambda: b"late" in t.out)


async def test_reading_pauses_while_requests_queue_up_and_while_a_stream_does_not_take_its_body() -> None:
    gate = asyncio.Event()

    async def held(ex: Exchange) -> None:
        await gate.wait()
        ex.respond(200, [], b"")

    s, t = session(held, max_pipelined=2)
    s.feed(b"GET / HTTP/1.1\r\n\r\n" * 4)
    assert not t.reading
    gate.set()
    await until(lambda: t.out.count(b"200 OK") == 4)
    assert t.reading
    chunks = []

    async def slow_reader(ex: Exchange) -> None:
        await gate2.wait()
        while (chunk := await ex.next_chunk()) is not None:
            chunks.append(chunk)
        ex.respond(200, [], b"")

    gate2 = asyncio.Event()
    s, t = session(slow_reader, stream_buffer_bytes=8)
    s.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n")
    await settle()
    assert not t.reading  # the handler takes nothing yet: no more is read
    gate2.set()
    await until(lambda: t.reading)
    s.feed(b"0\r\n\r\n")
    await until(lambda: b"200 OK" in t.out)
    assert b"".join(chunks) == b"0123456789abcdef"


async def test_the_client_going_away_cancels_the_handler_and_ends_its_writes() -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def forever(ex: Exchange) -> None:
        ex.start(200)
        started.set()
        try:
            while True:
                await ex.write(b"x")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        except ExchangeClosed:
            outcome.append("closed")

    s, _t = session(forever)
    s.feed(b"POST /w HTTP/1.1\r\n\r\n")
    await started.wait()
    s.connection_lost()
    await until(lambda: bool(outcome))
    assert outcome == ["cancelled"]


async def test_a_failing_handler_gets_a_500_and_the_connection_goes_on() -> None:
    async def broken(ex: Exchange) -> None:
        if ex.request.path == "/bad":
            raise RuntimeError("boom")
        ex.respond(200, [], b"fine")

    s, t = session(broken)
    s.feed(b"GET /bad HTTP/1.1\r\n\r\n")
    await until(lambda: b"500" in t.out)
    s.feed(b"GET /good HTTP/1.1\r\n\r\n")
    await until(lambda: b"fine" in t.out)
    assert [status for status, _, _ in Responses(bytes(t.out)).items] == [500, 200]


async def test_graceful_shutdown_finishes_the_current_answer_then_closes() -> None:
    gate = asyncio.Event()

    async def held(ex: Exchange) -> None:
        await gate.wait()
        ex.respond(200, [], b"done")

    s, t = session(held)
    s.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    await settle()
    s.shutdown()
    assert not t.closed
    gate.set()
    await until(lambda: t.closed)
    items = Responses(bytes(t.out)).items
    assert len(items) == 1 and items[0][1]["connection"] == "close"


async def test_connection_close_with_a_body_that_comes_after_the_head() -> None:
    s, t = session()
    s.feed(b"POST /a HTTP/1.1\r\nConnection: close\r\nContent-Length: 4\r\n\r\n")
    await settle()
    s.feed(b"body")
    await until(lambda: t.closed)
    ((status, headers, body),) = Responses(bytes(t.out)).items
    assert (status, body, headers["connection"]) == (200, b"POST /a body", "close")
