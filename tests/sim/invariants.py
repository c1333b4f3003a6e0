"""Raft's invariants on whole members, after every step each member takes.

A member's Raft only acts through its Readies, so every Ready a node is about to handle is a step
to check (``RaftNode.ready_observer``): Election Safety, Leader Completeness, agreement on
committed terms and Log Matching (``tests.raft.invariants``, the bare-core simulator's checks).
State Machine Safety is checked where the member applies: the real ``Member``'s
``apply_entries``, ``apply_conf_change`` and ``install_snapshot`` are observed, every member's
applied entries must extend one global hash chain, a restarted member resumes the chain at its
backend's applied index, and a snapshot installs a state some member applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from raft.api import CommittedEntry
from raft.core import ConfChange, Entry, EntryType, Ready
from raft.node import RaftNode
from raft.node.inputs import KINDS
from tests.raft.invariants import RaftInvariants

if TYPE_CHECKING:
    from tests.sim.member import SimMember


class MemberInvariants:
    def __init__(self, fail: Callable[[str], object]) -> None:
        self.fail = fail
        self.raft = RaftInvariants(fail)
        self.chains: dict[int, tuple[int, bytes]] = {}
        self.seen_commit: dict[int, int] = {}
        self.readies = 0

    # ---- Raft, on every Ready ----

    def on_ready(self, node: RaftNode, rd: Ready) -> None:
        self.readies += 1
        mid = node.member_id
        r = node.rn.raft
        log = r.raft_log
        self.raft.observe_role(mid, r.role, r.term, log)
        self.seen_commit[mid] = self.raft.observe_commit(mid, log, self.seen_commit.get(mid, 0))
        if rd.entries:
            first = rd.entries[0].index
            self.raft.observe_entries(mid, rd.entries, log.term_or_zero(first - 1) if first > 1 else 0)

    # ---- the state machine, where the member applies ----

    def member_starting(self, m: SimMember) -> None:
        """A new incarnation: its chain resumes where its backend says it applied up to."""
        member = m.member
        assert member is not None
        mid = m.id
        applied = member.applied_index
        h = self.raft.state_at(applied)
        if h is None:
            self.fail(f"{m} restarted with a backend at applied index {applied}, which no member ever applied")
            return
        self.chains[mid] = (applied, h)
        self.seen_commit[mid] = 0
        orig_apply, orig_conf, orig_install = member.apply_entries, member.apply_conf_change, member.install_snapshot

        def apply_entries(entries: Sequence[CommittedEntry]) -> None:
            self._applied(m, [Entry(e.term, e.index, EntryType.NORMAL, e.data) for e in entries])
            orig_apply(entries)

        def apply_conf_change(index: int, term: int, kind: str, member_id: int, context: bytes) -> bool:
            cc = ConfChange(KINDS[kind], member_id, context)
            self._applied(m, [Entry(term, index, EntryType.CONF_CHANGE, cc.encode())])
            return orig_conf(index, term, kind, member_id, context)

        def install_snapshot(path: Path) -> None:
            orig_install(path)
            self._installed(m)

        member.apply_entries = apply_entries  # type: ignore[method-assign]
        member.apply_conf_change = apply_conf_change  # type: ignore[method-assign]
        member.install_snapshot = install_snapshot  # type: ignore[method-assign]

    def _applied(self, m: SimMember, entries: list[Entry]) -> None:
        index, h = self.chains[m.id]
        fresh = [e for e in entries if e.index > index]  # the applier skips what the backend already has
        if fresh:
            self.chains[m.id] = self.raft.observe_applied(m.id, index, h, fresh)

    def _installed(self, m: SimMember) -> None:
        member = m.member
        assert member is not None
        applied = member.applied_index
        h = self.raft.state_at(applied)
        if h is None:
            self.fail(f"{m} installed a snapshot at applied index {applied}, which no member ever applied")
            return
        self.chains[m.id] = (applied, h)
