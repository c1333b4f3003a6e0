"""Passwords: bcrypt hashing and checking on worker threads, never on the event loop.

A bcrypt check at etcd's default cost (``--bcrypt-cost`` 10) takes tens of milliseconds of CPU
(bcrypt releases the GIL while it works). At most ``workers`` run at once and at most
``max_waiting`` more wait for a worker; beyond that a request is refused at once with
``etcdserver: too many requests``, so a flood of password guesses costs the member a bounded
amount of CPU and memory and never stalls the requests of other clients.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from kvstore.errors import TooManyRequests

DEFAULT_COST = 10  # etcd's bcrypt.DefaultCost
MIN_COST, MAX_COST = 4, 31


class Passwords:
    def __init__(self, cost: int = DEFAULT_COST, workers: int = 2, max_waiting: int = 64) -> None:
        self.cost = cost
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bcrypt")
        self._slots = asyncio.Semaphore(workers + max_waiting)

    async def _run(self, fn: object, *args: object) -> object:
        if self._slots.locked():
            raise TooManyRequests()
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)  # type: ignore[arg-type]

    async def hash(self, password: str) -> bytes:
        return await self._run(_hash, password.encode(), self.cost)  # type: ignore[return-value]

    async def check(self, hashed: bytes, password: str) -> bool:
        return await self._run(_check, hashed, password.encode())  # type: ignore[return-value]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# bcrypt uses the first 72 bytes of a password (Go's bcrypt of etcd 3.4 as well); this bcrypt
# refuses longer ones instead, so they are cut as bcrypt would see them
_MAX_LEN = 72


def _hash(password: bytes, cost: int) -> bytes:
    return bcrypt.hashpw(password[:_MAX_LEN], bcrypt.gensalt(cost))


def _check(hashed: bytes, password: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:_MAX_LEN], hashed)
    except ValueError:  # not a bcrypt hash (an empty password of a user added without one, say)
        return False
