"""MemoryStorage, the unstable log, RaftLog, quorum maths, inflights and progress."""

import pytest

from raft.core import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Snapshot,
    SnapshotMetadata,
    UnavailableError,
)
from raft.core.errors import SnapshotOutOfDateError
from raft.core.inflights import Inflights
from raft.core.log import RaftLog
from raft.core.log_unstable import Unstable
from raft.core.progress import Progress, ProgressState
from raft.core.quorum import VoteResult, committed_index, vote_result
from raft.core.types import ENTRY_OVERHEAD


def ents(*terms, start=1):
    return [Entry(t, start + i) for i, t in enumerate(terms)]


def storage_3_5():
    # snapshot at 3 (term 3), entries 4 (t4), 5 (t5)
    s = MemoryStorage()
    s.apply_snapshot(Snapshot(SnapshotMetadata(3, 3, ConfState((1,)))))
    s.append([Entry(4, 4), Entry(5, 5)])
    return s


# -- MemoryStorage -------------------------------------------------------------------------


def test_storage_term():
    s = storage_3_5()
    with pytest.raises(CompactedError):
        s.term(2)
    assert s.term(3) == 3 and s.term(4) == 4 and s.term(5) == 5
    with pytest.raises(UnavailableError):
        s.term(6)


def test_storage_entries():
    s = storage_3_5()
    s.append([Entry(6, 6, data=b"x" * 10)])
    with pytest.raises(CompactedError):
        s.entries(3, 5, None)
    assert s.entries(4, 5, None) == [Entry(4, 4)]
    assert [e.index for e in s.entries(4, 7, None)] == [4, 5, 6]
    # size limits: always at least one entry
    assert [e.index for e in s.entries(4, 7, 0)] == [4]
    assert [e.index for e in s.entries(4, 7, 2 * ENTRY_OVERHEAD)] == [4, 5]
    with pytest.raises(UnavailableError):
        s.entries(4, 8, None)


def test_storage_first_last_index_and_compact():
    s = storage_3_5()
    assert (s.first_index(), s.last_index()) == (4, 5)
    with pytest.raises(CompactedError):
        s.compact(3)
    s.compact(4)
    assert (s.first_index(), s.last_index()) == (5, 5)
    assert s.term(4) == 4
    with pytest.raises(ValueError):
        s.compact(6)


def test_storage_append_truncation_semantics():
    s = storage_3_5()
    s.append([Entry(6, 4), Entry(6, 5)])  # overwrite the whole tail
    assert [e.term for e in s.entries(4, 6, None)] == [6, 6]
    s.append([Entry(7, 5), Entry(7, 6)])  # overwrite from 5, extend
    assert [e.term for e in s.entries(4, 7, None)] == [6, 7, 7]
    s.append([Entry(1, 2), Entry(1, 3), Entry(8, 4)])  # compacted part skipped
    assert [e.term for e in s.entries(4, 5, None)] == [8]
    assert s.last_index() == 4
    s.append([Entry(1, 1)])  # entirely compacted: ignored
    assert s.last_index() == 4
    with pytest.raises(ValueError):
        s.append([Entry(9, 7)])  # gap


def test_storage_snapshots():
    s = storage_3_5()
    snap = s.create_snapshot(4, ConfState((1, 2)), b"data")
    assert snap.metadata == SnapshotMetadata(4, 4, ConfState((1, 2)))
    assert s.snapshot() is snap
    with pytest.raises(SnapshotOutOfDateError):
        s.create_snapshot(4, None, b"")
    with pytest.raises(SnapshotOutOfDateError):
        s.apply_snapshot(Snapshot(SnapshotMetadata(2, 2, ConfState((1,)))))
    s.apply_snapshot(Snapshot(SnapshotMetadata(10, 9, ConfState((1, 2, 3)))))
    assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 9)
    assert s.initial_state() == (HardState(), ConfState((1, 2, 3)))


# -- Unstable ----------------------------------------------------------------------------------


def test_unstable_truncate_and_append():
    u = Unstable(5)
    u.truncate_and_append(ents(1, 1, start=5))
    assert (u.offset, [e.index for e in u.entries]) == (5, [5, 6])
    u.truncate_and_append(ents(2, start=7))  # plain append
    assert [e.term for e in u.entries] == [1, 1, 2]
    u.truncate_and_append(ents(3, 3, start=6))  # replace from 6
    assert [(e.index, e.term) for e in u.entries] == [(5, 1), (6, 3), (7, 3)]
    u.truncate_and_append(ents(4, start=4))  # before offset: replace all
    assert (u.offset, [(e.index, e.term) for e in u.entries]) == (4, [(4, 4)])


def test_unstable_stable_to():
    u = Unstable(5)
    u.truncate_and_append(ents(1, 1, 2, start=5))
    handed_out = list(u.entries)
    u.stable_to(6, 2)  # wrong term: entry was replaced, ignore
    assert u.offset == 5
    u.stable_to(6, 1)
    assert (u.offset, [e.index for e in u.entries]) == (7, [7])
    assert len(handed_out) == 3  # lists given away are never mutated


# -- RaftLog ------------------------------------------------------------------------------------


def new_log(*terms):
    s = MemoryStorage()
    s.append(ents(*terms))
    return RaftLog(s)


def test_log_maybe_append_and_conflicts():
    log = new_log(1, 2, 3)
    log.committed = 1
    # mismatch at prev entry
    assert log.maybe_append(3, 2, 3, ents(4, start=4)) is None
    # match: append
    assert log.maybe_append(3, 3, 3, ents(4, start=4)) == 4
    assert log.committed == 3
    # commit is capped at the last new entry
    assert log.maybe_append(2, 2, 10, []) == 2
    # conflict at 3 replaces the uncommitted tail... but 3 is committed here
    with pytest.raises(AssertionError):
        log.maybe_append(2, 2, 3, ents(9, start=3))
    log2 = new_log(1, 2, 3, 3)
    log2.committed = 2
    assert log2.maybe_append(2, 2, 2, ents(5, start=3)) == 3
    assert [(e.index, e.term) for e in log2.all_entries()] == [(1, 1), (2, 2), (3, 5)]


def test_log_stale_append_does_not_truncate():
    # Figure 2: "if an existing entry conflicts ... delete it and all that follow"; a
    # duplicate, shorter MsgApp must not remove entries that do not conflict.
    log = new_log(1, 1, 1, 1)
    assert log.maybe_append(0, 0, 0, ents(1, 1)) == 2
    assert log.last_index() == 4


def test_find_conflict_by_term():
    log = new_log(1, 1, 3, 3, 5)
    assert log.find_conflict_by_term(5, 4) == (4, 3)
    assert log.find_conflict_by_term(5, 5) == (5, 5)
    assert log.find_conflict_by_term(4, 2) == (2, 1)
    assert log.find_conflict_by_term(5, 0) == (0, 0)


def test_is_up_to_date():
    # §5.4.1: compare last terms, then lengths
    log = new_log(1, 2, 3)
    assert log.is_up_to_date(1, 4)
    assert log.is_up_to_date(3, 3)
    assert log.is_up_to_date(4, 3)
    assert not log.is_up_to_date(2, 3)
    assert not log.is_up_to_date(10, 2)


def test_maybe_commit_only_current_term():
    log = new_log(1, 2)
    assert not log.maybe_commit(2, 1)
    assert log.maybe_commit(2, 2) and log.committed == 2


def test_next_ents_and_slice_across_stable_and_unstable():
    log = new_log(1, 1, 1)
    log.append(ents(2, 2, start=4))
    assert [e.index for e in log.slice(2, 6, None)] == [2, 3, 4, 5]
    assert [e.index for e in log.slice(2, 6, 2 * ENTRY_OVERHEAD)] == [2, 3]
    assert [e.index for e in log.slice(3, 6, 2 * ENTRY_OVERHEAD)] == [3, 4]
    log.commit_to(4)
    log.applied_to(1)
    assert [e.index for e in log.next_ents()] == [2, 3, 4]
    assert log.has_next_ents()


def test_log_restore_from_snapshot():
    log = new_log(1, 1)
    log.restore(Snapshot(SnapshotMetadata(10, 4, ConfState((1,)))))
    assert (log.first_index(), log.last_index(), log.last_term(), log.committed) == (11, 10, 4, 10)
    with pytest.raises(CompactedError):
        log.term(5)


# -- quorum, inflights, progress -----------------------------------------------------------


@pytest.mark.parametrize(
    ("matches", "want"),
    [([5], 5), ([5, 3], 3), ([5, 3, 1], 3), ([5, 4, 3, 2], 3), ([9, 9, 1, 1, 1], 1), ([9, 9, 9, 1, 1], 9)],
)
def test_committed_index(matches, want):
    ids = list(range(1, len(matches) + 1))
    assert committed_index(ids, dict(zip(ids, matches, strict=True))) == want


def test_vote_result():
    ids = [1, 2, 3]
    assert vote_result(ids, {1: True}) == VoteResult.PENDING
    assert vote_result(ids, {1: True, 2: True}) == VoteResult.WON
    assert vote_result(ids, {1: True, 2: False}) == VoteResult.PENDING
    assert vote_result(ids, {1: True, 2: False, 3: False}) == VoteResult.LOST
    assert vote_result(ids, {4: True, 5: True}) == VoteResult.PENDING  # non-voters never count


def test_inflights_window():
    f = Inflights(3)
    for i in (3, 5, 7):
        f.add(i)
    assert f.full()
    with pytest.raises(AssertionError):
        f.add(9)
    f.free_le(5)
    assert f.count() == 1 and not f.full()
    f.free_first_one()
    assert f.count() == 0


def test_progress_transitions():
    pr = Progress(6, 4)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.probe_sent = True
    assert pr.is_paused()
    assert pr.maybe_update(5) and not pr.probe_sent and pr.next == 6
    assert not pr.maybe_update(4)
    pr.become_replicate()
    pr.optimistic_update(10)
    assert pr.next == 11
    assert not pr.maybe_decr_to(5, 5)  # stale: at or below match
    assert pr.maybe_decr_to(8, 2) and pr.next == 6
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.next == 21
    # probe back-off uses the hint but never goes below match + 1
    pr = Progress(11, 4, match=3)
    assert pr.maybe_decr_to(10, 1) and pr.next == 4
    assert not pr.maybe_decr_to(10, 1)  # stale rejection
