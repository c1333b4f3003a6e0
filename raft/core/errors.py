"""Errors the Raft core raises, each naming one condition and whose fault it is."""


class RaftError(Exception):
    """Base class of every error raised by raft.core."""


class CompactedError(RaftError):
    """Storage: the requested index is older than the first available entry (compacted away)."""


class UnavailableError(RaftError):
    """Storage: the requested index is beyond the last entry it holds."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """Storage: a snapshot is being prepared; the leader will retry later."""


class SnapshotOutOfDateError(RaftError):
    """Storage: the caller tried to install a snapshot older than the current one."""


class ProposalDroppedError(RaftError):
    """The node cannot take this proposal now (no leader, transfer in progress, over the limit, ...).

    The caller may retry later, ideally after the leader changes.
    """


class ConfigError(RaftError):
    """Local misuse: the Config passed to RawNode is invalid."""


class ConfChangeError(RaftError):
    """A membership change the core refuses (it would remove every voter, or demote a voter)."""
