"""ReadOnly: ReadIndex requests waiting for a heartbeat round to confirm leadership (thesis §6.4).

A request records the leader's commit index when it arrived; it is answered once a majority
acknowledged a heartbeat carrying its context (or a later one: requests are released in
arrival order). Contexts must be unique per request; a duplicate is ignored.
"""

from __future__ import annotations

from raft.core.types import Message


class ReadIndexStatus:
    __slots__ = ("acks", "index", "req")

    def __init__(self, req: Message, index: int) -> None:
        self.req = req
        self.index = index
        self.acks: dict[int, bool] = {}


class ReadOnly:
    __slots__ = ("lease_based", "pending", "queue")

    def __init__(self, lease_based: bool) -> None:
        self.lease_based = lease_based
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(m, index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> dict[int, bool] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[node_id] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release every request queued up to and including ctx, in order."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx) + 1
        released = [self.pending.pop(c) for c in self.queue[:i]]
        del self.queue[:i]
        return released

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
