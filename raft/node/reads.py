"""Linearizable reads, batched: one ReadIndex round (thesis §6.4) answers every read waiting for it.

A read arriving while no round is in flight starts one; reads arriving while a round is in flight
wait for the next, which starts as soon as the current one is answered. So a burst of reads costs
one heartbeat round, not one each. A round carries a fresh context; the Ready whose read state
has that context answers all its waiters with the confirmed commit index. A round not answered
within ``READ_ROUND_TIMEOUT`` (a lost message, a leader change) is asked again with everyone
waiting, or failed with ``NoLeaderError`` when there is no leader to ask.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable

from raft.core import ProposalDroppedError, ReadState
from raft.errors import NoLeaderError
from raft.runtime import Clock

READ_ROUND_TIMEOUT = 1.0  # a ReadIndex round not answered by then is asked again


class _ReadRound:
    __slots__ = ("ctx", "deadline", "waiters")

    def __init__(self, ctx: bytes, waiters: list[asyncio.Future[int]], deadline: float) -> None:
        self.ctx = ctx
        self.waiters = waiters
        self.deadline = deadline


class ReadBatcher:
    """The rounds of one node. ask(ctx) asks the core for a read index (it may raise
    ProposalDroppedError); has_leader says whether a leader is known; wake wakes the Ready loop."""

    def __init__(
        self, clock: Clock, ask: Callable[[bytes], None], has_leader: Callable[[], bool], wake: Callable[[], None]
    ) -> None:
        self._clock = clock
        self._ask = ask
        self._has_leader = has_leader
        self._wake = wake
        self._ids = itertools.count(1)
        self._pending: list[asyncio.Future[int]] = []
        self._round: _ReadRound | None = None

    async def read_index(self) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        if self._round is None:
            self._start_round()
        return await fut

    def _start_round(self, waiters: list[asyncio.Future[int]] | None = None) -> None:
        if waiters is None:
            waiters, self._pending = self._pending, []
        waiters = [w for w in waiters if not w.done()]
        if not waiters:
            self._round = None
            return
        ctx = next(self._ids).to_bytes(8, "big")
        try:
            self._ask(ctx)
        except ProposalDroppedError:
            self._round = None
            for w in waiters:
                if not w.done():
                    w.set_exception(NoLeaderError())
            return
        self._round = _ReadRound(ctx, waiters, self._clock.monotonic() + READ_ROUND_TIMEOUT)
        self._wake()

    def check_timeout(self) -> None:
        """On every tick: a round unanswered past its deadline is asked again, or failed without a leader."""
        rnd = self._round
        if rnd is None or self._clock.monotonic() < rnd.deadline:
            return
        self._round = None
        waiting = rnd.waiters + self._pending
        self._pending = []
        if not self._has_leader():
            for w in waiting:
                if not w.done():
                    w.set_exception(NoLeaderError())
            return
        self._start_round(waiting)

    def answer(self, read_states: Iterable[ReadState]) -> None:
        """The read states of a Ready: the round they answer releases its waiters; the next one starts."""
        rnd = self._round
        for rs in read_states:
            if rnd is not None and rs.request_ctx == rnd.ctx:
                for w in rnd.waiters:
                    if not w.done():
                        w.set_result(rs.index)
                self._round = None
                rnd = None
        if self._round is None and self._pending:
            self._start_round()

    def leader_known(self) -> None:
        """A leader appeared: reads that could not start a round before start one now."""
        if self._pending and self._round is None:
            self._start_round()

    def fail(self, exc: Exception) -> None:
        waiters = self._pending + (self._round.waiters if self._round else [])
        self._pending, self._round = [], None
        for w in waiters:
            if not w.done():
                w.set_exception(exc)
