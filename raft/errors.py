"""Errors of the replicated log (the driver, the WAL, the transport's users), each naming one condition.

raft/ knows nothing of etcd: the member's server turns these into etcd's errors at its edge
(``kvstore.server.member``). ``StartupError`` is shared: the store raises the same one for its
own files, so a member refuses to start with one kind of error whatever is damaged.
"""

from __future__ import annotations


class StartupError(Exception):
    """The member cannot start safely (corrupt or torn files, bad flags); the message says why and where."""


class LogError(Exception):
    """Base class of the errors the running log raises to its callers."""


class NoLeaderError(LogError):
    """There is no known leader to take the request."""


class StoppedError(LogError):
    """The log has stopped (shutdown, a failure to persist, or this member was removed)."""


class BusyError(LogError):
    """The leader cannot take more now (its uncommitted budget is spent, or a transfer is under way)."""


class NotLeaderError(LogError):
    """Only the leader can do this."""


class BadTransfereeError(LogError):
    """Leadership can only move to a voter of the configuration."""


class TransferTimeoutError(LogError):
    """The leadership transfer did not finish in time."""


class ConfChangePendingError(LogError):
    """Another membership change is proposed and not applied yet (one at a time, thesis §4.1)."""


class RemovedError(StoppedError):
    """This member was removed from the cluster: it has stopped for good (it must not rejoin)."""
