"""Raft's safety properties, checked incrementally; shared by the bare-core and whole-member simulators.

Each ``observe_*`` call feeds one fact a simulator saw (a node's role and log after a step, the
entries it is about to persist, the entries it applies) and calls ``fail`` with a sentence naming
the broken property if that fact contradicts what was seen before:

- **Election Safety**: at most one leader per term, ever.
- **Leader Completeness**: a node becoming leader has every entry committed before (compacted
  entries excepted: they are in its snapshot).
- **Committed prefix**: no two nodes ever commit different terms at one index.
- **Log Matching**: entries with the same (index, term) carry the same data and follow the same
  previous term, on every node.
- **State Machine Safety**: every node applies a prefix of one global sequence (a hash chain of
  the applied entries), and a snapshot installs a state that sequence went through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import msgpack

from raft.core import Entry, StateRole
from raft.core.errors import CompactedError
from raft.core.log import RaftLog


def chain(h: bytes, e: Entry) -> bytes:
    return hashlib.blake2b(h + msgpack.packb([e.index, e.term, int(e.type), e.data]), digest_size=12).digest()


class RaftInvariants:
    def __init__(self, fail: Callable[[str], object]) -> None:
        self.fail = fail
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.committed_terms: dict[int, int] = {}  # index -> term of the committed entry
        self.max_committed = 0
        # (index, term) -> (type, data, previous entry's term)
        self.log_entries: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.global_hash: dict[int, bytes] = {0: b""}
        self.max_applied = 0

    def observe_role(self, node: int, role: StateRole, term: int, log: RaftLog) -> bool:
        """Election Safety (and Leader Completeness for a new leader); True when node is a new leader."""
        if role != StateRole.LEADER:
            return False
        other = self.leaders.get(term)
        if other is None:
            self.leaders[term] = node
            self.observe_new_leader(node, log)
            return True
        if other != node:
            self.fail(f"Election Safety: n{other} and n{node} are both leaders of term {term}")
        return False

    def observe_new_leader(self, node: int, log: RaftLog) -> None:
        last = log.last_index()
        if last < self.max_committed:
            self.fail(f"Leader Completeness: leader n{node} ends at {last} < committed {self.max_committed}")
        for i in range(max(1, log.first_index() - 1), self.max_committed + 1):
            want = self.committed_terms.get(i)
            if want is None:
                continue
            try:
                got = log.term(i)
            except CompactedError:
                continue
            if got != want:
                self.fail(f"Leader Completeness: n{node} has term {got} at committed {i} (want {want})")

    def observe_commit(self, node: int, log: RaftLog, seen: int) -> int:
        """The terms a node committed agree with everyone's; returns its commit index (the next seen)."""
        c = log.committed
        if c <= seen:
            return seen
        for i in range(max(seen + 1, log.first_index() - 1), c + 1):
            t = log.term_or_zero(i)
            if t == 0:
                continue
            known = self.committed_terms.get(i)
            if known is None:
                self.committed_terms[i] = t
            elif known != t:
                self.fail(f"n{node} committed index {i} at term {t}, but term {known} was committed")
        if c > self.max_committed:
            self.max_committed = c
        return c

    def observe_entries(self, node: int, entries: Sequence[Entry], prev_term: int) -> None:
        """Log Matching on entries a node is about to persist (prev_term: the term before the first)."""
        for e in entries:
            key = (e.index, e.term)
            val = (int(e.type), e.data, prev_term)
            got = self.log_entries.get(key)
            if got is None:
                self.log_entries[key] = val
            elif got != val:
                self.fail(f"Log Matching: n{node} has ({e.index}, term {e.term}) = {val}, another node {got}")
            prev_term = e.term

    def observe_applied(self, node: int, index: int, h: bytes, entries: Sequence[Entry]) -> tuple[int, bytes]:
        """State Machine Safety: node, at (index, hash), applies entries; returns its new (index, hash)."""
        for e in entries:
            if e.index != index + 1:
                self.fail(f"n{node} applied entry {e.index} after {index}")
            h = chain(h, e)
            index = e.index
            g = self.global_hash.get(index)
            if g is None:
                self.global_hash[index] = h
                self.max_applied = index
            elif g != h:
                self.fail(f"State Machine Safety: n{node} applied a different entry at index {index}")
        return index, h

    def state_at(self, index: int) -> bytes | None:
        """The global sequence's hash at index, if some node applied that far."""
        return self.global_hash.get(index)
