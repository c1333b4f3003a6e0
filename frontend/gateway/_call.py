"""What a handler sees of a gateway call: a ``ServerCall`` look-alike over one HTTP/1.1 exchange.

Handlers written for ``frontend.grpc.ServerCall`` run unchanged: ``metadata`` comes from the HTTP
headers as grpc-gateway maps them (``Authorization`` as ``authorization``, ``Grpc-Metadata-Foo`` as
``foo``, the standard request headers as ``grpcgateway-<name>``, plus ``x-forwarded-host`` and
``x-forwarded-for``), the deadline from ``Grpc-Timeout``; ``peer_certificate`` is None (as in etcd, a
client certificate never names the user of a gateway call); ``write`` sends one streamed result
(``{"result":...}`` and a newline, as grpc-gateway's ``ForwardResponseStream`` does), waiting while the
client does not read; ``async for`` yields the requests the body carries, decoded as they arrive, and
ends at the end of the body or at the first value that does not decode (grpc-gateway then closes its
sending side and the stream goes on); ``fail`` ends the call with an error from any task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from frontend.gateway._gojson import Decoder, GoJSONError
from frontend.grpc import CallEnded, GrpcError, StatusCode
from frontend.http1 import BodyTooLarge, Exchange, ExchangeClosed

_PERMANENT = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Charset",
        "Accept-Language",
        "Accept-Ranges",
        "Authorization",
        "Cache-Control",
        "Content-Type",
        "Cookie",
        "Date",
        "Expect",
        "From",
        "Host",
        "If-Match",
        "If-Modified-Since",
        "If-None-Match",
        "If-Schedule-Tag-Match",
        "If-Unmodified-Since",
        "Max-Forwards",
        "Origin",
        "Pragma",
        "Referer",
        "User-Agent",
        "Via",
        "Warning",
    )
)
_METADATA_PREFIX = "grpc-metadata-"
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def incoming_metadata(exchange: Exchange) -> list[tuple[str, str]]:
    """grpc-gateway's metadata for a request (its DefaultHeaderMatcher and annotateContext)."""
    request = exchange.request
    pairs: list[tuple[str, str]] = []
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name == "authorization":
            pairs.append(("authorization", value))
        if name in _PERMANENT:
            pairs.append(("grpcgateway-" + name, value))
        elif name.startswith(_METADATA_PREFIX) and len(name) > len(_METADATA_PREFIX):
            pairs.append((name[len(_METADATA_PREFIX) :], value))
    host = request.header("x-forwarded-host") or request.header("host")
    if host:
        pairs.append(("x-forwarded-host", host))
    if request.remote:
        ip = request.remote.rpartition(":")[0].strip("[]")
        forwarded = request.header("x-forwarded-for")
        pairs.append(("x-forwarded-for", f"{forwarded}, {ip}" if forwarded else ip))
    return pairs


def parse_timeout(value: str) -> float:
    """grpc-gateway's timeoutDecode of Grpc-Timeout; GrpcError(INVALID_ARGUMENT) if malformed."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or unit not in _UNITS:
        raise GrpcError(StatusCode.INVALID_ARGUMENT, f"invalid grpc-timeout: {value}")
    return int(digits) * _UNITS[unit]


class GatewayCall:
    """One gateway call (see the module docstring); the ``Gateway`` drives it."""

    def __init__(
        self,
        exchange: Exchange,
        path: str,
        metadata: list[tuple[str, str]],
        deadline: float | None,
        *,
        encode_result: Callable[[Any], bytes],
        on_error: Callable[[GatewayCall, BaseException], None],
        decode_request: Callable[[bytes], Any] | None = None,
        decoder: Decoder | None = None,
        first: Any = None,
        stream_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.exchange = exchange
        self.path = path
        self._metadata = metadata
        self.deadline = deadline
        self.finished = False
        self.started = False  # the streamed response began
        self.task: asyncio.Future[Any] | None = None
        self._encode_result = encode_result
        self._on_error = on_error
        self._decode_request = decode_request
        self._decoder = decoder
        self._first = first  # the request grpc-gateway decodes before it opens a client stream
        self._stream_headers = stream_headers or STREAM_HEADERS
        self.received = 0  # stream messages taken from the body
        self.sent = 0  # stream messages written

    # ---- metadata ----

    def metadata(self, key: str) -> str | None:
        for k, v in self._metadata:
            if k == key:
                return v
        return None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self._metadata)

    def peer_certificate(self) -> dict[str, Any] | None:
        """Always None: a gateway call is never authenticated by a client certificate. etcd's gateway
        reaches its gRPC server over a connection of its own, and etcd's auth ignores the common name of
        a gateway request (``AuthInfoFromTLS``); the ``Authorization`` header's token is what counts."""
        return None

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    @property
    def cancelled(self) -> bool:
        return self.finished or self.exchange.closed

    def fail(self, exc: BaseException) -> None:
        """Ends the call now with the status for exc (from another task than the handler's too)."""
        if self.finished:
            return
        self._on_error(self, exc)
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    # ---- streams ----

    async def write(self, message: Any) -> None:
        if self.finished or self.exchange.closed:
            raise CallEnded()
        exchange = self.exchange
        if not self.started:
            self.started = True
            exchange.start(200, self._stream_headers)
        try:
            await exchange.write(b'{"result":' + self._encode_result(message) + b"}\n")
        except ExchangeClosed:
            raise CallEnded() from None
        self.sent += 1
        if self.finished:
            raise CallEnded()

    def __aiter__(self) -> GatewayCall:
        return self

    async def __anext__(self) -> Any:
        first = self._first
        if first is not None:
            self._first = None
            self.received += 1
            return first
        decoder = self._decoder
        if decoder is None or self._decode_request is None:
            raise StopAsyncIteration
        while True:
            try:
                raw = decoder.next_value()
            except (EOFError, GoJSONError):
                self._decoder = None  # grpc-gateway closes its sending side; the stream goes on
                raise StopAsyncIteration from None
            if raw is not None:
                try:
                    request = self._decode_request(raw)
                except GoJSONError:
                    self._decoder = None
                    raise StopAsyncIteration from None
                self.received += 1
                return request
            if self.finished:
                raise StopAsyncIteration
            try:
                chunk = await self.exchange.next_chunk()
            except (ExchangeClosed, BodyTooLarge):
                chunk = None
            if chunk is None:
                decoder.end()
            else:
                decoder.feed(chunk)


STREAM_HEADERS = (("Content-Type", "application/json"), ("Grpc-Metadata-Content-Type", "application/grpc"))
