"""The simulated ``raft.runtime.Runtime`` of a member: virtual clock, seeded randomness, inline executor.

- ``SimClock`` reads the loop's virtual time; its wall clock is a fixed epoch plus that time, so it
  moves forward across a member's restarts as a real one does.
- ``random(name)`` is derived from the run's seed, the member, its incarnation and the consumer's
  name (string seeds hash with SHA-512: the same on every machine and process).
- ``SimExecutor`` runs the blocking call on the loop after a simulated latency, with as many calls
  under way at once as the real pool has workers. The call itself takes effect when it runs (a
  WAL write is durable when its ``fdatasync`` returns); during the latency everything else goes
  on, as it does while a worker thread syncs.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any, TypeVar

from raft.runtime import Runtime
from tests.sim.disk import Machine

T = TypeVar("T")
EPOCH = 1_750_000_000.0  # the wall clock's reading at virtual time 0


class SimClock:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return EPOCH + self._loop.time()


class SimExecutor:
    def __init__(self, workers: int, latency: Callable[[], float]) -> None:
        self._slots = asyncio.Semaphore(workers)
        self._latency = latency

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            delay = self._latency()
            if delay > 0:
                await asyncio.sleep(delay)
            return fn(*args)

    def shutdown(self) -> None:
        pass


def latency_model(rng: random.Random, slow: float) -> Callable[[], float]:
    """Mostly a fraction of a millisecond (fsync on a good SSD), now and then a stall of up to 100 ms."""

    def draw() -> float:
        if rng.random() < slow:
            return rng.uniform(0.01, 0.1)
        return rng.uniform(0.0001, 0.002)

    return draw


def sim_runtime(
    loop: asyncio.AbstractEventLoop, seed: int, machine: Machine, incarnation: int, slow_io: float
) -> Runtime:
    prefix = f"{seed}/m{machine.member_id}/{incarnation}"
    io_rng = random.Random(f"{prefix}/io")

    def executor(name: str, workers: int) -> SimExecutor:
        return SimExecutor(workers, latency_model(io_rng, slow_io))

    return Runtime(
        clock=SimClock(loop),
        random=lambda name: random.Random(f"{prefix}/{name}"),
        executor=executor,
        disk=machine.disk,
    )
