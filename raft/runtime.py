"""The member's runtime seams: its clock, its randomness, its executor for blocking calls, its disk.

A member (``raft.node.RaftNode`` and ``kvstore.server.member.Member`` with what they own) reads
time, draws random numbers and runs blocking calls only through a ``Runtime``, so a whole member
can run under the deterministic simulator (``tests/sim``) as it runs under ``raftkv serve``:

- ``Clock``: ``monotonic()`` for deadlines and ``wall()`` for what must move forward across
  restarts (etcd's request ids). Timers are the event loop's (``call_later``, ``asyncio.sleep``):
  the simulator's loop runs on the same virtual time its clock reads.
- ``random(name)``: a ``random.Random`` for one consumer (Raft's election jitter, the watch hub's
  progress jitter). Really seeded from the OS; in the simulation derived from the run's seed,
  the member and the consumer's name, so a seed replays exactly.
- ``executor(name, workers)``: where blocking calls run (WAL writes and fsyncs, backend syncs and
  copies). Really a thread pool, so the event loop keeps taking requests while the disk works
  (the group commit); in the simulation the call runs on the loop after a simulated latency.
- ``disk``: the WAL's file operations (``raft.disk``).

``Runtime.real()`` is what ``raftkv serve`` uses.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from raft.disk import OS_DISK, Disk

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, lease expiry, round trips)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (only where a value must exceed those of earlier runs)."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class Executor(Protocol):
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs the blocking call fn(*args) away from the event loop's critical path; returns its result."""
        ...

    def shutdown(self) -> None:
        """Waits for the calls under way; no call may be made afterwards."""
        ...


class ThreadExecutor:
    """A pool of worker threads (the real executor)."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def _os_random(name: str) -> random.Random:
    return random.Random()


@dataclass
class Runtime:
    clock: Clock = field(default_factory=SystemClock)
    random: Callable[[str], random.Random] = _os_random
    executor: Callable[[str, int], Executor] = ThreadExecutor
    disk: Disk = OS_DISK

    @classmethod
    def real(cls) -> Runtime:
        return cls()


REAL = Runtime.real()
