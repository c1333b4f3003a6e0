"""raft.core: a pure, deterministic Raft state machine in the style of etcd-io/raft.

No I/O, no clock (time is `RawNode.tick()`), no global randomness (election jitter comes
from `Config.rng`). A driver feeds ticks, proposals and peer messages into a `RawNode`
and handles each `Ready` it returns; see `raft.core.rawnode` for the exact obligations.

Modules, one job each: types (values and wire form), errors, config, storage (Storage
protocol, MemoryStorage), log_unstable + log (the log split by durability), quorum (vote
and commit maths), confchange (what a membership change leads to), inflights + progress +
tracker (per-follower replication state and membership), read_only (ReadIndex), raft (the
state machine), rawnode (RawNode and Ready).
"""

from raft.core.config import Config, RandomSource
from raft.core.errors import (
    CompactedError,
    ConfChangeError,
    ConfigError,
    ProposalDroppedError,
    RaftError,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from raft.core.rawnode import PeerProgress, RawNode, Ready, Status
from raft.core.storage import MemoryStorage, Storage
from raft.core.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
)

__all__ = [
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeType",
    "ConfState",
    "Config",
    "ConfigError",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "PeerProgress",
    "ProposalDroppedError",
    "RaftError",
    "RandomSource",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "StateRole",
    "Status",
    "Storage",
    "UnavailableError",
]
