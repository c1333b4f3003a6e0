"""A shared/exclusive lock for the threads that use a backend environment which may be replaced.

Worker threads that read or sync the backend (a backup, a hash, the periodic sync) hold it
shared, so a long one (a snapshot of a large backend) never holds up the others; installing a
snapshot from the leader closes the environment and holds it exclusively. An exclusive request
waits for the sharers to finish, and no new sharer starts once it waits, so it cannot starve.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SharedLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._sharers = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    def acquire_shared(self) -> None:
        with self._cond:
            while self._exclusive or self._waiting_exclusive:
                self._cond.wait()
            self._sharers += 1

    def release_shared(self) -> None:
        with self._cond:
            if self._sharers <= 0:
                raise RuntimeError("release_shared of a SharedLock not held shared")
            self._sharers -= 1
            if not self._sharers:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        with self._cond:
            self._waiting_exclusive += 1
            try:
                while self._exclusive or self._sharers:
                    self._cond.wait()
            finally:
                self._waiting_exclusive -= 1
            self._exclusive = True

    def release_exclusive(self) -> None:
        with self._cond:
            if not self._exclusive:
                raise RuntimeError("release_exclusive of a SharedLock not held exclusively")
            self._exclusive = False
            self._cond.notify_all()

    @property
    def held(self) -> bool:
        """Whether anyone holds it (for tests and assertions)."""
        with self._cond:
            return self._exclusive or self._sharers > 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self.acquire_exclusive()
        try:
            yield
        finally:
            self.release_exclusive()
