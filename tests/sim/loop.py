"""A deterministic asyncio event loop on virtual time, and the simulated processes that run on it.

``SimLoop`` is a real ``asyncio`` event loop (the member's code runs on it unchanged: tasks,
futures, ``call_later``, ``asyncio.sleep``, ``wait_for``) with no I/O and no threads. Its clock is
virtual: when nothing is ready to run, it jumps straight to the next timer, so a simulated minute
costs what its callbacks cost. Callbacks run in the order they became ready (FIFO), timers in
order of their deadline; nothing depends on the wall clock, the OS or thread scheduling, so one
seed always gives the same run. ``run_in_executor`` refuses: every blocking call of a simulated
member must go through its injected executor.

A ``Process`` is what one simulated OS process owns. Every task and callback belongs to the process
whose context scheduled it (``PROCESS``, a context variable that tasks inherit); once a process is
killed, nothing of it runs again: not its pending callbacks, not its timers, not the rest of its
tasks, not even their ``finally`` blocks, exactly as after a SIGKILL. A member that restarts is a
new process over the same machine (``tests.sim.disk.Machine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable
from typing import Any


class Deadlock(RuntimeError):
    """Every task waits and no timer is set: nothing can ever happen again."""


class Process:
    """A simulated OS process (a member incarnation, or a client)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        # every task it started: a killed process's are kept from the garbage collector, which would
        # otherwise close their coroutines and run their finally blocks in the middle of the run
        self.tasks: list[asyncio.Task[Any]] = []
        self.context = contextvars.copy_context()
        self.context.run(PROCESS.set, self)

    def __repr__(self) -> str:
        return f"Process({self.name}, {'alive' if self.alive else 'dead'})"

    def kill(self) -> None:
        self.alive = False

    def spawn(self, loop: asyncio.AbstractEventLoop, coro: Any, name: str | None = None) -> asyncio.Task[Any]:
        """A task of this process."""
        return loop.create_task(coro, name=name, context=self.context)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs fn in this process's context (what it schedules belongs to the process)."""
        return self.context.run(fn, *args)


PROCESS: contextvars.ContextVar[Process | None] = contextvars.ContextVar("sim_process", default=None)


def current_process() -> Process | None:
    return PROCESS.get()


def _guarded(proc: Process, callback: Callable[..., Any], *args: Any) -> None:
    if proc.alive:
        callback(*args)


class _Selector:
    """The loop's "I/O poll": there is no I/O, so waiting means moving the clock to the next timer."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Deadlock("every task is blocked and no timer is set")
        if timeout > 0:
            loop = self._loop
            loop.now += timeout
            loop.idle_steps = 0
        return []

    def close(self) -> None:
        pass


class SimLoop(asyncio.BaseEventLoop):
    MAX_STEPS_WITHOUT_TIME = 2_000_000  # a loop this busy without time passing is spinning: a livelock

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.idle_steps = 0
        self.steps = 0
        self._selector = _Selector(self)  # type: ignore[assignment]
        self._clock_resolution = 1e-9
        self.errors: list[dict[str, Any]] = []
        self.set_exception_handler(self._on_exception)
        self.set_task_factory(self._task)

    def _task(self, loop: asyncio.AbstractEventLoop, coro: Any, context: contextvars.Context | None = None) -> Any:
        task = asyncio.Task(coro, loop=self, context=context)
        proc = context.get(PROCESS) if context is not None else PROCESS.get()
        if proc is not None:
            tasks = proc.tasks
            tasks.append(task)
            if len(tasks) % 512 == 0 and proc.alive:
                tasks[:] = [t for t in tasks if not t.done()]
        return task

    def abandon(self) -> None:
        """Ends the run: every task still pending is dropped without running anything more of it."""
        for task in asyncio.all_tasks(self):
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            with contextlib.suppress(BaseException):
                task.get_coro().close()

    def time(self) -> float:
        return self.now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _run_once(self) -> None:
        super()._run_once()  # type: ignore[misc]
        self.steps += 1
        self.idle_steps += 1
        if self.idle_steps > self.MAX_STEPS_WITHOUT_TIME:
            raise RuntimeError(f"{self.MAX_STEPS_WITHOUT_TIME} loop steps without virtual time moving: a livelock")

    def call_soon(self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None) -> Any:
        proc = context.get(PROCESS) if context is not None else PROCESS.get()
        if proc is not None:
            callback = functools.partial(_guarded, proc, callback)
        return super().call_soon(callback, *args, context=context)

    def call_at(
        self, when: float, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> Any:
        proc = context.get(PROCESS) if context is not None else PROCESS.get()
        if proc is not None:
            callback = functools.partial(_guarded, proc, callback)
        return super().call_at(when, callback, *args, context=context)

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any, context: Any = None) -> Any:
        raise RuntimeError("a simulated member has no threads (call_soon_threadsafe)")

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        raise RuntimeError(f"a blocking call outside the injected executor: {func!r}")

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = context.get("message", "")
        if message.startswith("Task was destroyed but it is pending"):
            return  # a task of a killed process, or one left when the run ended
        self.errors.append(context)
