"""What a handler sees of its call: metadata, deadline, cancellation, and for streams read and write.

A ``ServerCall`` belongs to one HTTP/2 stream of a ``GrpcSession``. Unary handlers only read its
metadata and deadline. Streaming handlers ``await call.write(message)`` (which waits while the
client does not take what was already sent: back-pressure, never an unbounded buffer) and, for
bidirectional calls, ``async for request in call``. Once the call is over (answered, reset by the
client, past its deadline, connection gone) ``write`` raises ``CallEnded`` and reads stop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from frontend.grpc._framing import MessageReader
from frontend.grpc._status import GrpcError, StatusCode

if TYPE_CHECKING:
    from frontend.grpc._session import GrpcSession
    from frontend.http2 import Request


class Kind(IntEnum):
    UNARY = 0  # handler(request, call) -> response, or an awaitable of it
    SERVER_STREAM = 1  # async handler(request, call) -> None, writing with call.write
    BIDI = 2  # async handler(call) -> None, reading with `async for`, writing with call.write


class CallEnded(GrpcError):
    """The call is over (the client reset it or went away, or its deadline passed)."""

    def __init__(self) -> None:
        super().__init__(StatusCode.CANCELLED, "the call has ended")


class ServerCall:
    __slots__ = (
        "_drained",
        "_queue",
        "_queued_bytes",
        "_reader_waiter",
        "_session",
        "_unacked",
        "deadline",
        "finished",
        "headers_sent",
        "kind",
        "path",
        "reader",
        "remote_ended",
        "request",
        "started",
        "stats",
        "stream_id",
        "task",
        "timer",
    )

    def __init__(
        self,
        session: GrpcSession,
        stream_id: int,
        request: Request,
        kind: Kind,
        reader: MessageReader,
        deadline: float | None,
    ) -> None:
        self._session = session
        self.stream_id = stream_id
        self.request = request
        self.path = request.path.decode("ascii", "replace")
        self.kind = kind
        self.reader = reader
        self.deadline = deadline  # in the event loop's time, None without grpc-timeout
        self.finished = False
        self.started = False
        self.remote_ended = False
        self.headers_sent = False
        self.task: asyncio.Task[Any] | asyncio.Future[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.stats: Any = None  # the method's MethodStats (set by the session)
        self._queue: deque[tuple[Any, int]] = deque()  # decoded requests of a stream and their wire size
        self._queued_bytes = 0
        self._unacked = 0  # flow-control bytes held back while the queue is full
        self._reader_waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    # ---- metadata ----

    def metadata(self, key: str) -> str | None:
        """The value of a request metadata key (lowercase), or None."""
        value = self.request.get(key.encode("ascii"))
        return None if value is None else value.decode("latin-1")

    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's verified TLS certificate (``ssl.SSLObject.getpeercert()``), None without one."""
        return self._session.peer_cert

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.request.headers]

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._session.loop.time())

    @property
    def cancelled(self) -> bool:
        return self.finished

    def fail(self, exc: BaseException) -> None:
        """Ends the call now with the status for exc (from another task than the handler's too)."""
        self._session.fail(self, exc)

    # ---- streams ----

    async def write(self, message: Any) -> None:
        """Sends one response message; waits while the client has not taken enough of the earlier ones."""
        if self.finished:
            raise CallEnded()
        session = self._session
        session.send_message(self, message.SerializeToString())
        while not self.finished and session.must_wait(self):
            fut = session.loop.create_future()
            self._drained = fut
            try:
                await fut
            finally:
                self._drained = None
        if self.finished:
            raise CallEnded()

    def __aiter__(self) -> ServerCall:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._queue:
                message, size = self._queue.popleft()
                self._queued_bytes -= size
                self._session.consumed(self, size)
                return message
            if self.finished or self.remote_ended:
                raise StopAsyncIteration
            fut = self._session.loop.create_future()
            self._reader_waiter = fut
            try:
                await fut
            finally:
                self._reader_waiter = None

    # ---- used by the session ----

    def push(self, message: Any, size: int) -> None:
        self._queue.append((message, size))
        self._queued_bytes += size
        self._wake_reader()

    def _wake_reader(self) -> None:
        fut = self._reader_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def wake(self) -> None:
        """Lets a waiting write or read look again (drained, resumed, ended)."""
        fut = self._drained
        if fut is not None and not fut.done():
            fut.set_result(None)
        self._wake_reader()
