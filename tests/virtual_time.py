"""Runs an in-process async test on virtual time (tests/sim/loop.py's deterministic loop).

A test that must show something does *not* happen for a while ("no alarm while a follower", "the
timers leave a streaming handler alone") cannot wait on a condition; on the wall clock it would
sleep a fixed time, which checks less on a slow machine. On ``SimLoop`` the clock only moves when
every task waits, so ``asyncio.sleep(0.3)`` runs every timer due in those 0.3 s, in order, at no
cost: the negative check covers exactly the time it names. Only for tests without real I/O (the
loop has no sockets and no threads).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from tests.sim.loop import SimLoop

P = ParamSpec("P")
T = TypeVar("T")


def on_virtual_time(test: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Decorates an async test so that it runs to completion on a fresh SimLoop."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        loop = SimLoop()
        try:
            result = loop.run_until_complete(test(*args, **kwargs))
            assert not loop.errors, f"unhandled errors on the loop: {loop.errors}"
            return result
        finally:
            loop.abandon()
            loop.close()

    return run
