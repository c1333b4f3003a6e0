"""The HTTP/1.1 side of the client port: requests parsed by ``httptools``, answered by an ``Http1App``.

The port tells HTTP/1.1 from HTTP/2 by the first bytes (``frontend.protocol``); everything that is
not the HTTP/2 preface comes here. ``Http1App`` is the seam for the JSON gateway and the health,
metrics and version endpoints; until those exist, ``NotServed`` answers every request with a 404
that says why. Responses carry Content-Length; the connection is kept alive unless the request
asks otherwise, and a request that does not parse gets a 400 and the connection is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httptools

MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Http1Request:
    method: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Http1Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default=(("content-type", "text/plain; charset=utf-8"),))


class Http1App(Protocol):
    def __call__(self, request: Http1Request) -> Http1Response: ...


def not_served(request: Http1Request) -> Http1Response:
    """Every HTTP/1.1 request, until the gateway and the endpoints exist."""
    return Http1Response(
        404,
        f"404 page not found: raftkv serves gRPC (HTTP/2) on this port; {request.method} {request.path} "
        "over HTTP/1.1 is not served yet\n".encode(),
    )


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error"}


def render(response: Http1Response, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines.append(f"content-length: {len(response.body)}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


class Http1Session:
    """One HTTP/1.1 connection: ``feed`` bytes, get bytes to write; ``closing`` once it must end."""

    def __init__(self, app: Http1App, write: Callable[[bytes], None]) -> None:
        self.app = app
        self._write = write
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self.closing = False

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            raise _TooLarge()
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        request = Http1Request(
            parser.get_method().decode("latin-1"),
            self._url.decode("latin-1"),
            tuple(self._headers),
            b"".join(self._body),
        )
        try:
            response = self.app(request)
        except Exception:
            response = Http1Response(500, b"internal error\n")
        keep_alive = parser.should_keep_alive()
        self._write(render(response, keep_alive))
        if not keep_alive:
            self.closing = True

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self._parser.feed_data(data)
        except _TooLarge:
            self._write(render(Http1Response(413, b"request body too large\n"), keep_alive=False))
            self.closing = True
        except httptools.HttpParserUpgrade:
            self._write(render(Http1Response(400, b"protocol upgrades are not served\n"), keep_alive=False))
            self.closing = True
        except httptools.HttpParserError as exc:
            self._write(render(Http1Response(400, f"bad request: {exc}\n".encode()), keep_alive=False))
            self.closing = True


class _TooLarge(Exception):
    pass
