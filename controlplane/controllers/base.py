"""The worker loop shared by every controller: take a key, sync it, forget or requeue it."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from controlplane.store.base import Conflict
from controlplane.workqueue import WorkQueue

log = logging.getLogger("controlplane.controllers")


class Requeue(Exception):
    """Not converged yet, nothing went wrong: try again after ``after`` seconds (rate limited if 0)."""

    def __init__(self, reason: str, after: float = 0.0) -> None:
        super().__init__(reason)
        self.after = after


class Controller(Protocol):
    name: str
    queue: WorkQueue

    def sync(self, key: str) -> None: ...


def process_next(c: Controller, timeout: float | None = None) -> bool:
    """One turn of a worker; False once the queue is shut down (or empty after timeout)."""
    key = c.queue.get(timeout)
    if key is None:
        return False
    try:
        c.sync(key)
        c.queue.forget(key)
    except Requeue as r:
        log.debug("%s %s: %s", c.name, key, r)
        if r.after > 0:
            c.queue.add_after(key, r.after)
        else:
            c.queue.add_rate_limited(key)
    except Conflict as exc:
        log.debug("%s %s: %s; requeued", c.name, key, exc)
        c.queue.add_rate_limited(key)
    except Exception as exc:
        log.warning("%s: syncing %r failed (%s: %s); requeued", c.name, key, type(exc).__name__, exc)
        c.queue.add_rate_limited(key)
    finally:
        c.queue.done(key)
    return True


def run_workers(c: Controller, workers: int, stop: threading.Event) -> list[threading.Thread]:
    def loop() -> None:
        while not stop.is_set():
            if not process_next(c, timeout=0.5) and c.queue.shutting_down:
                return

    threads = [threading.Thread(target=loop, name=f"{c.name}-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()

    def shutdown_on_stop() -> None:
        stop.wait()
        c.queue.shutdown()

    threading.Thread(target=shutdown_on_stop, daemon=True).start()
    return threads
