"""The simulated network between members, and the ``raft.peer_transport.PeerTransport`` over it.

Every message travels on its own with a random delay (so messages reorder), may be dropped or
duplicated, and is delivered only if its directed link is up when it arrives: a partition cuts a
set of links, both ways (a symmetric partition) or one way only (an asymmetric link). A message
for a member that is down is lost; one from a member that died while it was in flight still
arrives (it had left the machine). Messages cross the wire in their wire form and are decoded
strictly on arrival (``raft.peer_messages``), as the real transport decodes them.

Snapshots go as a whole file after a transfer time that grows with their size; the transfer
fails (the sender's ``on_snapshot_status`` says so) if either member dies or the link is cut in
the meantime, or if the receiver's disk fails to make the file durable. The receiver writes the
file into its snapshot directory under ``raft.snapshot``'s name and hands it over only then.

Requests between members (``request``) are a round trip over the same links.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raft.core.types import Message, MessageType
from raft.peer_messages import message_from_peer
from raft.peer_transport import TransportHandlers
from raft.transport import PeerRequestError
from tests.sim.loop import Process


@dataclass
class NetOptions:
    min_delay: float = 0.0002
    max_delay: float = 0.005
    slow: float = 0.02  # chance a message takes up to slow_delay instead
    slow_delay: float = 0.2
    drop: float = 0.0
    dup: float = 0.0
    snapshot_bytes_per_s: float = 50e6
    snapshot_fail: float = 0.0  # chance the receiver cannot make a received snapshot durable
    unreachable_report: float = 0.3  # chance a message lost to a cut link is reported unreachable


class SimNetwork:
    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random, opts: NetOptions) -> None:
        self.loop = loop
        self.rng = rng
        self.opts = opts
        self.cut: set[tuple[int, int]] = set()  # directed links that are down
        self.up_since: dict[tuple[int, int], float] = {}
        self.endpoints: dict[int, SimTransport] = {}
        self._ctx = contextvars.Context()  # arrivals belong to no process
        self.stats = {"sent": 0, "delivered": 0, "dropped": 0, "duplicated": 0, "cut": 0, "snapshots": 0}

    # ---- topology ----

    def link_up(self, a: int, b: int) -> bool:
        return (a, b) not in self.cut

    def set_cut(self, links: Iterable[tuple[int, int]]) -> None:
        now = self.loop.time()
        new = set(links)
        for link in self.cut - new:
            self.up_since[link] = now
        self.cut = new

    def heal(self) -> None:
        self.set_cut(())

    def delay(self) -> float:
        o, r = self.opts, self.rng
        if r.random() < o.slow:
            return r.uniform(o.max_delay, o.slow_delay)
        return r.uniform(o.min_delay, o.max_delay)

    # ---- messages ----

    def send(self, src: SimTransport, m: Message) -> None:
        self.stats["sent"] += 1
        frm, to = src.member_id, m.to
        dst = self.endpoints.get(to)
        if not self.link_up(frm, to) or dst is None:
            self.stats["cut"] += 1
            if self.rng.random() < self.opts.unreachable_report:
                src.report_unreachable(to)
            return
        r = self.rng
        copies = 1
        if r.random() < self.opts.drop:
            self.stats["dropped"] += 1
            return
        if r.random() < self.opts.dup:
            self.stats["duplicated"] += 1
            copies = 2
        wire = m.to_wire()
        for _ in range(copies):
            self.loop.call_at(self.loop.time() + self.delay(), self._arrive, frm, to, wire, context=self._ctx)

    def _arrive(self, frm: int, to: int, wire: list[Any]) -> None:
        dst = self.endpoints.get(to)
        if dst is None or not self.link_up(frm, to):
            return
        if frm in dst.removed:
            src = self.endpoints.get(frm)
            if src is not None:
                src.told_removed()
            return
        msg = message_from_peer(wire)
        if msg.frm != frm:
            raise AssertionError(f"a message from {frm} claims to come from {msg.frm}")
        self.stats["delivered"] += 1
        dst.process.call(dst.handlers.deliver, msg)

    # ---- snapshots ----

    async def transfer_snapshot(self, src: SimTransport, m: Message, data: bytes) -> bool:
        """Carries a snapshot file to m.to; True once the receiver has it durable and handed over."""
        frm, to = src.member_id, m.to
        dst = self.endpoints.get(to)
        if dst is None or not self.link_up(frm, to):
            return False
        await asyncio.sleep(self.delay() + len(data) / self.opts.snapshot_bytes_per_s)
        if self.endpoints.get(to) is not dst or not dst.process.alive:
            return False
        if not (self.link_up(frm, to) and self.link_up(to, frm)):
            return False
        if self.rng.random() < self.opts.snapshot_fail:
            return False  # the receiver's fsync of the file failed: the transfer is refused
        assert m.snapshot is not None
        md = m.snapshot.metadata
        snapdir = dst.handlers.snapshot_dir
        snapdir.path.mkdir(parents=True, exist_ok=True)
        final = snapdir.received_path(frm, md.term, md.index)
        tmp = final.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(final)
        self.stats["snapshots"] += 1
        wire = m.to_wire()
        dst.process.call(dst.handlers.deliver_snapshot, message_from_peer(wire, allow_snapshot=True), final)
        await asyncio.sleep(self.delay())  # the acknowledgement's way back
        return self.link_up(to, frm)

    # ---- requests ----

    async def request(self, src: SimTransport, peer: int, payload: bytes, timeout: float) -> bytes:
        async def round_trip() -> bytes:
            await asyncio.sleep(self.delay())
            dst = self.endpoints.get(peer)
            if dst is None or not self.link_up(src.member_id, peer):
                await asyncio.sleep(timeout)
                raise PeerRequestError(f"cannot reach member {peer:x}")
            answer = dst.process.spawn(self.loop, dst.handlers.on_request(src.member_id, payload))
            # shielded: cancelling the round trip must not wait on a task of a process that may be dead
            # (nothing of a killed process runs again, so its cancellation would never complete)
            body = await asyncio.shield(answer)
            await asyncio.sleep(self.delay())
            if not self.link_up(peer, src.member_id):
                await asyncio.sleep(timeout)
            return body

        try:
            return await asyncio.wait_for(round_trip(), timeout)
        except TimeoutError:
            raise PeerRequestError(f"member {peer:x} did not answer in time") from None


class SimTransport:
    """One member incarnation's end of the simulated network (a raft.peer_transport.PeerTransport)."""

    def __init__(self, net: SimNetwork, handlers: TransportHandlers, process: Process) -> None:
        self.net = net
        self.handlers = handlers
        self.process = process
        self.member_id = handlers.member_id
        self.peers: set[int] = set()
        self.removed: set[int] = set()
        self._stopped = False
        self._removed_reported = False

    async def start(self, listen: list[str]) -> None:
        self.net.endpoints[self.member_id] = self

    async def stop(self) -> None:
        self._stopped = True
        if self.net.endpoints.get(self.member_id) is self:
            del self.net.endpoints[self.member_id]

    def set_peers(self, peers: dict[int, str], removed: Iterable[int] = ()) -> None:
        self.peers = set(peers) - {self.member_id}
        self.removed.update(removed)

    def send(self, messages: Iterable[Message]) -> None:
        if self._stopped:
            return
        for m in messages:
            if m.to not in self.peers:
                continue
            if m.type == MessageType.SNAP:
                self.process.spawn(self.net.loop, self._send_snapshot(m))
            else:
                self.net.send(self, m)

    async def _send_snapshot(self, m: Message) -> None:
        ok = False
        try:
            path: Path = await self.handlers.snapshot_source(m)
            ok = await self.net.transfer_snapshot(self, m, path.read_bytes())
        finally:
            if not self._stopped:
                self.handlers.on_snapshot_status(m.to, ok)

    def active_since(self, peer: int) -> float | None:
        if peer not in self.net.endpoints or not self.net.link_up(self.member_id, peer):
            return None
        return self.net.up_since.get((self.member_id, peer), 0.0)

    async def request(
        self, payload: bytes, *, peer: int | None = None, address: str | None = None, timeout: float = 5.0
    ) -> bytes:
        if self._stopped:
            raise PeerRequestError("the transport is stopped")
        if peer is None:
            raise PeerRequestError("the simulated network has no addresses to dial")
        return await self.net.request(self, peer, payload, timeout)

    def report_unreachable(self, peer: int) -> None:
        self.net.loop.call_soon(self.handlers.on_unreachable, peer)

    def told_removed(self) -> None:
        if not self._removed_reported:
            self._removed_reported = True
            self.net.loop.call_soon(self.handlers.on_removed, context=self.process.context)
