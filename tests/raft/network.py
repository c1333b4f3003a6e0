"""In-process test harness: RawNodes over MemoryStorage and a network that delivers until quiet.

Like etcd's `network` in raft_test.go, but every node runs the full driver loop (persist the
Ready into its MemoryStorage, apply committed entries and conf changes, send, advance), so
tests exercise RawNode exactly as the real driver will. Messages can be dropped per link
(`cut`, `isolate`, `drop`) or per type (`ignore`), and are round-tripped through the wire
format on delivery.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from raft.core import (
    ConfChange,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from raft.core.raft import Raft


def storage_with_peers(voters: Iterable[int], learners: Iterable[int] = ()) -> MemoryStorage:
    """A fresh MemoryStorage whose (index 0) snapshot already lists the configuration."""
    s = MemoryStorage()
    s.apply_snapshot(Snapshot(SnapshotMetadata(0, 0, ConfState(tuple(voters), tuple(learners)))))
    return s


def new_raft(
    node_id: int,
    peers: Iterable[int],
    election: int = 10,
    heartbeat: int = 1,
    storage: MemoryStorage | None = None,
    learners: Iterable[int] = (),
    **cfg: object,
) -> Raft:
    """A bare Raft (no RawNode) for paper-style unit tests that inspect messages directly."""
    if storage is None:
        storage = storage_with_peers(peers, learners)
    cfg.setdefault("rng", random.Random(node_id))
    cfg.setdefault("pre_vote", False)
    cfg.setdefault("check_quorum", False)
    return Raft(Config(node_id, election_tick=election, heartbeat_tick=heartbeat, **cfg), storage)


def read_msgs(r: Raft) -> list[Message]:
    return r.read_messages()


class Node:
    """A RawNode plus the minimal driver around it: storage, applied log, read states."""

    def __init__(self, node_id: int, config: Config, storage: MemoryStorage) -> None:
        self.id = node_id
        self.config = config
        self.storage = storage
        self.raw = RawNode(config, storage)
        self.applied: list[tuple[int, int, bytes]] = []  # (index, term, data) of applied normal entries
        self.read_states: list[ReadState] = []
        self.snapshots_applied: list[int] = []

    @property
    def raft(self) -> Raft:
        return self.raw.raft

    def handle_ready(self) -> list[Message]:
        """One turn of the driver loop; returns the messages to send."""
        if not self.raw.has_ready():
            return []
        rd = self.raw.ready()
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
            self.snapshots_applied.append(rd.snapshot.metadata.index)
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                self.raw.apply_conf_change(ConfChange.decode(e.data))
            elif e.data:
                self.applied.append((e.index, e.term, e.data))
        self.read_states.extend(rd.read_states)
        self.raw.advance(rd)
        return rd.messages


class Network:
    """A set of nodes and the links between them."""

    def __init__(
        self,
        ids: Iterable[int],
        *,
        learners: Iterable[int] = (),
        seed: int = 0,
        bootstrap: bool = False,
        configure: Callable[[Config], None] | None = None,
        **cfg: object,
    ) -> None:
        self.ids = list(ids)
        self.learners = list(learners)
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.configure = configure
        self.nodes: dict[int, Node] = {}
        self.dropped: set[tuple[int, int]] = set()  # (from, to) links that drop everything
        self.drop_prob: dict[tuple[int, int], float] = {}
        self.ignored: set[MessageType] = set()
        self.delivered: list[Message] = []
        self.trace: Callable[[Message], None] | None = None
        for i in self.ids + self.learners:
            self.add_node(i, bootstrap=bootstrap)
        if bootstrap:
            self.stabilize()  # persist and apply the bootstrap conf changes

    def make_config(self, node_id: int) -> Config:
        cfg = dict(self.cfg)
        cfg.setdefault("rng", random.Random(node_id * 7919 + self.rng.randrange(1 << 30)))
        c = Config(node_id, **cfg)  # type: ignore[arg-type]
        if self.configure is not None:
            self.configure(c)
        return c

    def add_node(self, node_id: int, *, bootstrap: bool = False, empty: bool = False) -> Node:
        """Add a node: pre-configured with the network's members, bootstrapped, or empty (joining)."""
        storage = MemoryStorage() if bootstrap or empty else storage_with_peers(self.ids, self.learners)
        n = Node(node_id, self.make_config(node_id), storage)
        if bootstrap:
            n.raw.bootstrap(self.ids)
        self.nodes[node_id] = n
        return n

    def restart(self, node_id: int) -> Node:
        """Crash and restart from what the node persisted (its MemoryStorage)."""
        old = self.nodes[node_id]
        snap_index = old.storage.snapshot().metadata.index
        cfg = self.make_config(node_id)
        cfg.applied = snap_index
        n = Node(node_id, cfg, old.storage)
        self.nodes[node_id] = n
        return n

    # -- faults ---------------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        self.dropped.add((a, b))
        self.dropped.add((b, a))

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut(node_id, other)

    def drop(self, frm: int, to: int, prob: float) -> None:
        self.drop_prob[(frm, to)] = prob

    def ignore(self, t: MessageType) -> None:
        self.ignored.add(t)

    def recover(self) -> None:
        self.dropped.clear()
        self.drop_prob.clear()
        self.ignored.clear()

    def _filter(self, msgs: list[Message]) -> list[Message]:
        out = []
        for m in msgs:
            if m.type in self.ignored or (m.frm, m.to) in self.dropped or m.to not in self.nodes:
                continue
            p = self.drop_prob.get((m.frm, m.to), 0.0)
            if p and self.rng.random() < p:
                continue
            out.append(m)
        return out

    # -- driving --------------------------------------------------------------------------

    def collect(self) -> list[Message]:
        msgs: list[Message] = []
        for n in self.nodes.values():
            out = n.handle_ready()
            # the real transport refuses (and resets) a connection carrying a message "from" another member
            forged = [m for m in out if m.frm != n.id]
            assert not forged, f"node {n.id} sent messages from another member: {forged}"
            msgs.extend(out)
        return msgs

    def deliver(self, msgs: list[Message]) -> None:
        for m in self._filter(msgs):
            self.delivered.append(m)
            if self.trace is not None:
                self.trace(m)
            self.nodes[m.to].raw.step(Message.from_wire(m.to_wire()))

    def stabilize(self, *msgs: Message, max_rounds: int = 10_000) -> None:
        """Deliver messages (and everything they cause) until the network is quiet."""
        pending = list(msgs)
        for _ in range(max_rounds):
            self.deliver(pending)
            pending = self.collect()
            if not pending and not any(n.raw.has_ready() for n in self.nodes.values()):
                return
        raise AssertionError("network did not stabilize")

    send = stabilize

    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].raw.tick()

    def tick_all(self, n: int = 1, stabilize: bool = True) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.raw.tick()
            if stabilize:
                self.stabilize()

    def campaign(self, node_id: int) -> None:
        self.nodes[node_id].raw.campaign()
        self.stabilize()

    def propose(self, node_id: int, data: bytes) -> None:
        self.nodes[node_id].raw.propose(data)
        self.stabilize()

    # -- inspection -----------------------------------------------------------------------

    def leader(self) -> int:
        leaders = [i for i, n in self.nodes.items() if n.raft.role == StateRole.LEADER]
        return max(leaders, key=lambda i: self.nodes[i].raft.term) if leaders else 0

    def role(self, node_id: int) -> StateRole:
        return self.nodes[node_id].raft.role

    def term(self, node_id: int) -> int:
        return self.nodes[node_id].raft.term

    def committed(self, node_id: int) -> int:
        return self.nodes[node_id].raft.raft_log.committed

    def log(self, node_id: int) -> list[tuple[int, int, bytes]]:
        return [(e.index, e.term, e.data) for e in self.nodes[node_id].raft.raft_log.all_entries()]
