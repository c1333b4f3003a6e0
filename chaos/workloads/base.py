"""What every workload shares: gRPC channels, client processes, outcome rules, pacing.

All clients of a run live in one asyncio event loop (grpc.aio), so a run costs one Python
thread on a machine whose cores are shared with the cluster under test. Worker ``w`` talks to
member ``w mod n`` only, as Jepsen binds clients to nodes.

Outcome rules (``Client.run``): an RPC that returned is ``ok`` (or ``fail`` if the workload
says its guard failed). An RPC that raised is ``fail`` when it certainly had no effect: it was
a read, or the connection was never made. Anything else is ``info``: the request may have been
applied, now or later. After ``info`` the worker continues as a new process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from chaos import security
from chaos.history import FAIL, INFO, OK, Operation, Recorder
from proto.etcdserverpb import rpc_pb2_grpc
from proto.v3lockpb import v3lock_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]

ERROR_BACKOFF_S = 0.1
FINAL_PROCESS = 1_000_000  # processes of the final reads: FINAL_PROCESS + member index
FINAL_TIMEOUT_S = 3.0  # the cluster has converged by then: a member this slow is not going to answer
# Errors raised before a request left the client: it cannot have been applied.
_NOT_SENT = ("failed to connect", "connection refused", "connect failed", "name resolution")


class NotApplied(Exception):
    """Raised by an operation's body for an error that certainly left the store unchanged."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(describe(cause))
        self.cause = cause


def certainly_not_applied(err: grpc.aio.AioRpcError) -> bool:
    code = err.code()
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE):
        return True
    details = (err.details() or "").lower()
    return code == grpc.StatusCode.UNAVAILABLE and any(s in details for s in _NOT_SENT)


def describe(err: BaseException) -> str:
    if isinstance(err, NotApplied):
        return str(err)
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    if isinstance(err, TimeoutError):
        return "timeout"
    return f"{type(err).__name__}: {err}"


class Pacer:
    """Spaces operations of all workers to at most ``rate`` per second (0: unpaced)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            await asyncio.sleep(0)
            return
        now = time.monotonic()
        self.next = max(self.next + self.interval, now - 1.0)  # no bursts to catch up after a stall
        if self.next > now:
            await asyncio.sleep(self.next - now)


@dataclass
class Options:
    concurrency: int = 10
    rate: float = 200.0  # operations per second, all workers together
    op_timeout: float = 5.0
    seed: int = 0
    run_id: str = "run"  # prefixes every key, so runs against the same cluster never share keys
    keys: int = 0  # workload-specific default when 0
    ops_per_key: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Channels:
    """One channel per endpoint, shared by the workers bound to it."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self._channels = [security.aio_channel(e, options=CHANNEL_OPTIONS) for e in endpoints]
        self.kv = [rpc_pb2_grpc.KVStub(c) for c in self._channels]
        self.watch = [rpc_pb2_grpc.WatchStub(c) for c in self._channels]
        self.lease = [rpc_pb2_grpc.LeaseStub(c) for c in self._channels]
        self.lock = [v3lock_pb2_grpc.LockStub(c) for c in self._channels]

    async def close(self) -> None:
        for c in self._channels:
            await c.close()


class Client:
    """One worker's view: its endpoint, its current process number, and the recorder."""

    def __init__(
        self,
        worker: int,
        stride: int,
        channels: Channels,
        recorder: Recorder,
        timeout: float,
        member: int | None = None,
    ) -> None:
        self.worker = worker
        self.process = worker
        self.stride = stride
        self.member = worker % len(channels.endpoints) if member is None else member
        self.endpoint = channels.endpoints[self.member]
        self.kv = channels.kv[self.member]
        self.watch = channels.watch[self.member]
        self.lease = channels.lease[self.member]
        self.lock = channels.lock[self.member]
        self.recorder = recorder
        self.timeout = timeout
        self.node = f"m{self.member + 1}"

    def crashed(self) -> None:
        self.process += self.stride

    async def run(
        self,
        f: str,
        value: Any,
        body: Callable[[], Awaitable[tuple[str, Any]]],
        *,
        read_only: bool = False,
        timeout: float | None = None,
    ) -> tuple[str, Any]:
        """Records one operation: body returns (ok|fail, completion value) or raises.

        The body is given ``timeout`` (default: the client's) plus a second before it is abandoned.
        """
        inv = self.recorder.invoke(self.process, f, value, node=self.node)
        try:
            type_, out = await asyncio.wait_for(body(), (timeout or self.timeout) + 1.0)
        except asyncio.CancelledError:
            self.recorder.info(inv, error="cancelled")
            self.crashed()
            raise
        except (grpc.aio.AioRpcError, TimeoutError, NotApplied) as err:
            sure = isinstance(err, NotApplied) or (isinstance(err, grpc.aio.AioRpcError) and certainly_not_applied(err))
            if read_only or sure:
                self.recorder.fail(inv, error=describe(err))
                outcome = FAIL
            else:
                self.recorder.info(inv, error=describe(err))
                self.crashed()
                outcome = INFO
            await asyncio.sleep(ERROR_BACKOFF_S)  # a member that refuses at once is not hammered
            return outcome, None
        self.recorder.complete(inv, type_, out)
        return type_, out


class Workload:
    """A workload: ``operate`` is one worker's next operation; ``final`` reads after healing; ``check``."""

    name = "workload"
    needs: frozenset[str] = frozenset()  # services beyond KV: "watch", "lease", "lock"

    def __init__(self, options: Options, recorder: Recorder) -> None:
        self.options = options
        self.recorder = recorder
        self.rng = random.Random(options.seed)

    async def setup(self, channels: Channels) -> None:
        """Runs once before the workers start."""

    async def operate(self, client: Client) -> None:
        raise NotImplementedError

    async def background(self, channels: Channels, stop: asyncio.Event) -> None:
        """An optional task that runs beside the workers (watchers, compactions)."""

    async def teardown(self, channels: Channels) -> None:
        """Runs once the workers and the background task have stopped, before the faults are healed."""

    async def final(self, channels: Channels) -> None:
        """Runs after the faults are healed and the cluster converged: final reads."""

    def check(self, ops: list[Operation], budget_s: float) -> dict[str, Any]:
        """{"verdict": "valid"|"invalid"|"unknown", ...details}; details may name "window" op indices."""
        raise NotImplementedError


def ok(value: Any) -> tuple[str, Any]:
    return OK, value


def failed(value: Any) -> tuple[str, Any]:
    return FAIL, value


async def final_reads(
    channels: Channels, recorder: Recorder, timeout: float, reads: list[Callable[[Client], Awaitable[str]]]
) -> None:
    """Runs the reads through every member at once, one process per member.

    A member that fails two reads in a row is given up on (it did not recover; the checker
    has the failures), so a dead member cannot hold the run up for a timeout per read.
    """

    async def through(m: int) -> None:
        client = Client(FINAL_PROCESS + m, 1_000, channels, recorder, min(timeout, FINAL_TIMEOUT_S), member=m)
        misses = 0
        for read in reads:
            misses = 0 if await read(client) == OK else misses + 1
            if misses >= 2:
                return

    await asyncio.gather(*(through(m) for m in range(len(channels.endpoints))))
