"""How simulated clients reach members: unary calls and bidirectional streams to the real services.

A call is a round trip: the request travels to the member (a random delay), the member's real
handler (``KVService.Put``, ``WatchService.Watch``, ...) runs as a task *of the member's process*,
and its answer travels back. A member that is down when the request arrives refuses it (the client
knows it was never applied); a member that dies while handling it never answers (the client times
out and cannot know). Streams keep their order both ways, as a gRPC stream over one connection
does, and break when the member dies.

Handlers get a ``SimCall``: no metadata and no certificate (anonymous, auth off), and for a stream
the requests the client sent and a ``write`` that carries responses back in their wire form.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message as ProtoMessage

if TYPE_CHECKING:
    from tests.sim.member import SimMember


class NotSent(Exception):
    """The member was down: the request was certainly not applied."""


class StreamBroken(Exception):
    """The member of a stream died (the connection reset)."""


class ClientNet:
    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random) -> None:
        self.loop = loop
        self.rng = rng
        self.neutral = contextvars.Context()

    def delay(self) -> float:
        r = self.rng
        return r.uniform(0.0002, 0.003) if r.random() > 0.02 else r.uniform(0.003, 0.1)

    async def call(self, m: SimMember, invoke: Callable[[], Any], timeout: float) -> Any:
        """Runs invoke() (a handler call: its result, or an awaitable of it) on member m."""
        await asyncio.sleep(self.delay())
        proc = m.process
        if not m.up or proc is None or not proc.alive:
            raise NotSent("connection refused")

        async def run() -> Any:
            result = invoke()
            if inspect.isawaitable(result):
                result = await result
            return result

        task = proc.spawn(self.loop, run())
        # not asyncio.wait_for: on a timeout it cancels the task and waits for it to finish, which a
        # task of a killed process never does (nothing of a dead process runs again)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            if proc.alive:
                task.cancel()  # the client gave up; the member's handler is cancelled as gRPC's would be
            raise TimeoutError
        result = task.result()
        await asyncio.sleep(self.delay())
        return result


class SimCall:
    """A ``frontend.grpc.ServerCall`` for one simulated client call or stream."""

    def __init__(self, net: ClientNet | None = None) -> None:
        self._net = net
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self.responses: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._to_member = 0.0  # arrival time of the last request (streams keep their order)
        self._to_client = 0.0

    def metadata(self, key: str) -> str | None:
        return None

    def peer_certificate(self) -> dict[str, Any] | None:
        return None

    # ---- the member's side ----

    def __aiter__(self) -> SimCall:
        return self

    async def __anext__(self) -> Any:
        item = await self._requests.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def write(self, msg: ProtoMessage) -> None:
        assert self._net is not None
        net = self._net
        # strictly later than the previous one: timers due at the same instant run in no set order
        at = self._to_client = max(self._to_client + 1e-9, net.loop.time() + net.delay())
        net.loop.call_at(at, self.responses.put_nowait, msg.SerializeToString(), context=net.neutral)

    # ---- the client's side ----

    def send(self, req: Any) -> None:
        assert self._net is not None
        net = self._net
        at = self._to_member = max(self._to_member + 1e-9, net.loop.time() + net.delay())
        net.loop.call_at(at, self._requests.put_nowait, req, context=net.neutral)
