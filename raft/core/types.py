"""Value types of the Raft core: entries, states, snapshots, messages and their wire form.

Everything here is plain data. `Message.to_wire`/`Message.from_wire` turn a message into
nested lists of ints, bytes and bools (msgpack-friendly) and back; the transport owns the
actual encoding. Enum numbers match etcd's raftpb so traces read the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

NONE = 0
"""The id of no node: "no leader", "no vote"."""


class MessageType(IntEnum):
    """Message kinds, numbered as etcd's raftpb.MessageType."""

    HUP = 0  # local: start an election
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # proposal (local, or forwarded by a follower)
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: report_unreachable
    SNAP_STATUS = 11  # local: report_snapshot
    CHECK_QUORUM = 12  # local: leader checks it heard from a quorum
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


LOCAL_MESSAGES = frozenset(
    {MessageType.HUP, MessageType.BEAT, MessageType.UNREACHABLE, MessageType.SNAP_STATUS, MessageType.CHECK_QUORUM}
)
"""Message types that only the node itself may generate; `RawNode.step` drops them."""

RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.PRE_VOTE_RESP,
    }
)


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(IntEnum):
    """Numbered as etcd's raftpb.ConfChangeType."""

    ADD_NODE = 0
    REMOVE_NODE = 1
    UPDATE_NODE = 2  # no change to the membership; the application's peer address changes
    ADD_LEARNER_NODE = 3


class StateRole(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(slots=True)
class Entry:
    """One log entry. Treated as immutable once it is in a log."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def to_wire(self) -> list[Any]:
        return [self.term, self.index, int(self.type), self.data]

    @staticmethod
    def from_wire(w: list[Any]) -> Entry:
        return Entry(w[0], w[1], EntryType(w[2]), w[3])


ENTRY_OVERHEAD = 16
"""Bytes an entry counts for beyond its payload in message and Ready size limits."""


def entry_size(e: Entry) -> int:
    return len(e.data) + ENTRY_OVERHEAD


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be durable before a node answers anyone (Raft thesis Figure 3.1)."""

    term: int = 0
    vote: int = 0
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == 0 and self.commit == 0


EMPTY_HARD_STATE = HardState()


@dataclass(slots=True, frozen=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(slots=True, frozen=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True, frozen=True)
class Snapshot:
    """A state machine image as of `metadata.index`. The core never looks inside `data`."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0

    def to_wire(self) -> list[Any]:
        md = self.metadata
        return [md.index, md.term, list(md.conf_state.voters), list(md.conf_state.learners), self.data]

    @staticmethod
    def from_wire(w: list[Any]) -> Snapshot:
        return Snapshot(SnapshotMetadata(w[0], w[1], ConfState(tuple(w[2]), tuple(w[3]))), w[4])


EMPTY_SNAPSHOT = Snapshot()


@dataclass(slots=True, frozen=True)
class ConfChange:
    """A single-step membership change, carried in the data of a CONF_CHANGE entry."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return msgpack.packb([int(self.type), self.node_id, self.context])

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        t, node_id, ctx = msgpack.unpackb(data)
        return ConfChange(ConfChangeType(t), node_id, ctx)


@dataclass(slots=True, frozen=True)
class ReadState:
    """The answer to `read_index(ctx)`: reads are linearizable once applied >= index."""

    index: int
    request_ctx: bytes


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state worth reporting; never persisted."""

    lead: int
    role: StateRole


@dataclass(slots=True)
class Message:
    """A Raft message. `term == 0` marks local messages (they never cross the network)."""

    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] | tuple[()] = ()  # a list when non-empty, () when empty
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""

    def to_wire(self) -> list[Any]:
        """Nested lists of ints, bytes and bools only; inverse of `from_wire`."""
        return [
            int(self.type),
            self.to,
            self.frm,
            self.term,
            self.log_term,
            self.index,
            [[e.term, e.index, int(e.type), e.data] for e in self.entries],
            self.commit,
            self.reject,
            self.reject_hint,
            self.snapshot.to_wire() if self.snapshot is not None else [],
            self.context,
        ]

    @staticmethod
    def from_wire(w: list[Any]) -> Message:
        snap = w[10]
        return Message(
            MessageType(w[0]),
            w[1],
            w[2],
            w[3],
            w[4],
            w[5],
            [Entry(e[0], e[1], EntryType(e[2]), e[3]) for e in w[6]] if w[6] else (),
            w[7],
            bool(w[8]),
            w[9],
            Snapshot.from_wire(snap) if snap else None,
            w[11],
        )


def vote_resp_type(t: MessageType) -> MessageType:
    if t == MessageType.VOTE:
        return MessageType.VOTE_RESP
    if t == MessageType.PRE_VOTE:
        return MessageType.PRE_VOTE_RESP
    raise ValueError(f"not a vote message type: {t!r}")
