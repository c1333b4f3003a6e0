"""The peer transport as the node needs it: an interface, the handlers it calls, the real one's factory.

``raft.node.RaftNode`` talks to its peers only through a ``PeerTransport`` made by a
``TransportFactory`` from the node's ``TransportHandlers``. ``tcp_transport`` makes the real one
(``raft.transport.Transport``: TCP, verification, TLS, snapshot streaming); the deterministic
simulator (``tests/sim``) makes one over its simulated network. What every implementation owes
the node:

- ``send`` never blocks and never raises for network trouble; messages may be lost, duplicated
  or reordered (Raft tolerates it). Every handler runs later on the event loop, never inside
  ``send``.
- every MsgSnap given to ``send`` gets exactly one ``on_snapshot_status`` (none after ``stop``);
  the file ``snapshot_source`` returns stays the node's; a received snapshot is handed to
  ``deliver_snapshot`` only once it is complete and durable in ``snapshot_dir``.
- ``request`` asks a peer (by id) or an address for its ``on_request`` answer and raises
  ``raft.transport.PeerRequestError`` when it cannot; a peer that says this member was removed
  makes the transport call ``on_removed`` once.
- after ``stop`` returns, no handler runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from raft.core.types import Message
from raft.snapshot import SnapshotDir
from raft.stats import RaftStats
from raft.transport import PeerSecurity, Transport


@dataclass(frozen=True)
class TransportHandlers:
    """Who the node is, and what it wants called when something arrives for it."""

    member_id: int
    cluster_id: int
    deliver: Callable[[Message], None]
    on_unreachable: Callable[[int], None]
    on_snapshot_status: Callable[[int, bool], None]
    snapshot_source: Callable[[Message], Awaitable[Path]]
    snapshot_dir: SnapshotDir
    deliver_snapshot: Callable[[Message, Path], None]
    stats: RaftStats
    on_request: Callable[[int, bytes], Awaitable[bytes]]
    on_removed: Callable[[], None]


class PeerTransport(Protocol):
    async def start(self, listen: list[str]) -> None:
        """Starts listening at the "host:port" addresses (the simulator's transport has none to bind)."""
        ...

    async def stop(self) -> None: ...

    def set_peers(self, peers: dict[int, str], removed: Iterable[int] = ()) -> None:
        """The peers (id -> "host:port", without this member) and ids removed from the cluster."""
        ...

    def send(self, messages: Iterable[Message]) -> None: ...

    def active_since(self, peer: int) -> float | None:
        """Since when (event loop time) the connection to peer has been up; None while it is down."""
        ...

    async def request(
        self, payload: bytes, *, peer: int | None = None, address: str | None = None, timeout: float = 5.0
    ) -> bytes: ...


TransportFactory = Callable[[TransportHandlers], PeerTransport]


def tcp_transport(security: PeerSecurity | None = None) -> TransportFactory:
    """The factory of the real transport, with the member's peer TLS settings."""

    def make(h: TransportHandlers) -> PeerTransport:
        return Transport(
            h.member_id,
            h.cluster_id,
            deliver=h.deliver,
            on_unreachable=h.on_unreachable,
            on_snapshot_status=h.on_snapshot_status,
            snapshot_source=h.snapshot_source,
            snapshot_dir=h.snapshot_dir,
            deliver_snapshot=h.deliver_snapshot,
            stats=h.stats,
            on_request=h.on_request,
            on_removed=h.on_removed,
            security=security,
        )

    return make
