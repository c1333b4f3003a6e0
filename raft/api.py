"""The seam between a member's server and consensus: what the server may ask of the log.

The server proposes encoded requests and membership changes and asks for read barriers; the log
calls the member's ``apply`` with committed entries, in order, each exactly once per process
lifetime (after a restart the log replays entries above the backend's applied index). The log's
errors are ``raft.errors``; the server turns them into its own. ``raft.node.RaftNode``
implements it; a single-member cluster is a Raft group with one voter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol


class CommittedEntry(Protocol):
    term: int
    index: int
    data: bytes


ApplyFn = Callable[[Sequence[CommittedEntry]], None]


class StateMachine(Protocol):
    """What a Raft node needs from the state it replicates (the member's store)."""

    @property
    def applied_index(self) -> int: ...

    def apply_entries(self, entries: Sequence[CommittedEntry]) -> None:
        """Applies committed normal entries, in order."""
        ...

    def apply_conf_change(self, index: int, term: int, kind: str, member_id: int, context: bytes) -> bool:
        """Applies a committed membership change ("add", "add_learner", "remove" or "update").

        Returns whether the change takes effect on the Raft configuration: the state machine may
        reject it (deterministically: a peer URL in use, an id removed before, ...), and then the
        log applies it as a no-op. For an entry it applied before (index <= applied_index), it
        answers whether its membership reflects the change.
        """
        ...

    def conf_state(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(voters, learners) as of applied_index, or None if the state machine does not know them."""
        ...

    def sync(self) -> None:
        """Makes everything applied so far durable (blocking; called from a worker thread)."""
        ...

    def snapshot_file(self, directory: Path) -> Path:
        """Writes a consistent copy of the state into directory and returns it (worker thread)."""
        ...

    def install_snapshot(self, path: Path) -> None:
        """Replaces the whole state by the snapshot file at path (on the event loop)."""
        ...


class ReplicatedLog(Protocol):
    member_id: int
    cluster_id: int

    @property
    def term(self) -> int: ...

    @property
    def leader(self) -> int:
        """The leader's member id, 0 when there is none."""
        ...

    @property
    def commit_index(self) -> int: ...

    def propose(self, data: bytes) -> None:
        """Queues data for the log; raises NoLeaderError, StoppedError or BusyError (raft.errors)."""
        ...

    def propose_conf_change(self, kind: str, member_id: int, context: bytes) -> None:
        """Queues a membership change; also raises ConfChangePendingError while one is unapplied."""
        ...

    def set_peers(self, peers: dict[int, str], removed: Iterable[int] = ()) -> None:
        """Who the members are (id -> peer host:port) and which ids were removed for good."""
        ...

    async def read_index(self) -> int:
        """An index such that once it is applied, local reads are linearizable."""
        ...

    async def start(self, sm: StateMachine) -> None: ...

    async def stop(self) -> None: ...
