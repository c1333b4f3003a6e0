"""The WAL: round trips, tail replacement, segments, torn tails repaired, corruption refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvstore.errors import StartupError
from raft import wal as walmod
from raft.wal import WAL, WalEntry, WALError


def entries(first: int, n: int, term: int = 1) -> list[WalEntry]:
    return [WalEntry(term, i, 0, f"data-{i}".encode()) for i in range(first, first + n)]


def segment(d: Path) -> Path:
    return sorted(d.glob("*.wal"))[-1]


def test_round_trip_with_hard_state(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, member_id=7, cluster_id=9)
    w.save(entries(1, 3), (1, 7, 2))
    w.save(entries(4, 2), (2, 7, 5))
    w.close()
    w2, st = WAL.open(tmp_path)
    assert (st.member_id, st.cluster_id) == (7, 9)
    assert (st.term, st.vote, st.commit) == (2, 7, 5)
    assert [(e.index, e.data) for e in st.entries] == [(i, f"data-{i}".encode()) for i in range(1, 6)]
    w2.save(entries(6, 1), (2, 7, 6))
    w2.close()
    assert [e.index for e in WAL.open(tmp_path)[1].entries] == list(range(1, 7))


def test_a_rewritten_tail_replaces_the_old_one(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 5, term=1))
    w.save(entries(3, 2, term=2))  # a new leader overwrote entries 3..5 with 3..4
    w.close()
    st = WAL.open(tmp_path)[1]
    assert [(e.index, e.term) for e in st.entries] == [(1, 1), (2, 1), (3, 2), (4, 2)]


def test_snapshot_mark_drops_covered_entries(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 5))
    w.save_snapshot_mark(3, 1)
    w.save(entries(6, 1))
    w.close()
    st = WAL.open(tmp_path)[1]
    assert (st.snapshot_index, st.snapshot_term) == (3, 1)
    assert [e.index for e in st.entries] == [4, 5, 6]


def test_segments_rotate_and_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walmod, "SEGMENT_BYTES", 400)
    w = WAL.create(tmp_path, 1, 1)
    for i in range(1, 41):
        w.save(entries(i, 1), (1, 1, i))
    assert len(w.segments) > 3
    w.save_snapshot_mark(30, 1)
    w.release_to(30)
    w.close()
    st = WAL.open(tmp_path)[1]
    assert st.entries[0].index <= 31 and st.entries[-1].index == 40
    assert st.commit == 40


@pytest.mark.parametrize("cut", [1, 3, 8, 12])
def test_torn_tail_is_truncated_and_the_rest_kept(tmp_path: Path, cut: int) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 3), (1, 1, 3))
    w.save(entries(4, 1), (1, 1, 4))
    w.close()
    path = segment(tmp_path)
    size = path.stat().st_size
    os.truncate(path, size - cut)  # the last batch was cut short by a crash
    w2, st = WAL.open(tmp_path)
    assert [e.index for e in st.entries][:3] == [1, 2, 3]
    w2.save(entries(len(st.entries) + 1, 1))  # and the log is writable again
    w2.close()
    assert WAL.open(tmp_path)[1].entries[-1].index == len(st.entries) + 1


def test_zero_filled_tail_is_a_torn_write(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 2))
    w.close()
    path = segment(tmp_path)
    data = bytearray(path.read_bytes())
    with open(path, "ab") as f:  # a record header followed by sectors that never reached the disk
        f.write(bytes(data[-40:-30]) + b"\x00" * 1024)
    st = WAL.open(tmp_path)[1]
    assert [e.index for e in st.entries] == [1, 2]
    assert path.stat().st_size == len(data)


@pytest.mark.parametrize("zeros", [8, 13, 512, 4096])
def test_zero_sectors_after_the_last_record_are_a_torn_write(tmp_path: Path, zeros: int) -> None:
    # found by the whole-member simulator (a power failure during a write: the tail's sectors read
    # as zeros): an all-zero record header is length 0 with CRC 0, the CRC of an empty body, and
    # was taken for an intact record that then failed to decode, so the member refused to start
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 2))
    w.close()
    path = segment(tmp_path)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x00" * zeros)
    st = WAL.open(tmp_path)[1]
    assert [e.index for e in st.entries] == [1, 2]
    assert path.stat().st_size == size


def test_corrupt_record_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 10), (1, 1, 10))
    w.close()
    path = segment(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # flip one bit in a record with records after it
    path.write_bytes(bytes(data))
    with pytest.raises(StartupError) as err:
        WAL.open(tmp_path)
    assert str(path) in str(err.value) and "corrupt" in str(err.value)
    assert path.read_bytes() == bytes(data)  # nothing was truncated


def test_corrupt_last_record_with_garbage_is_refused_not_dropped(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 3))
    w.close()
    path = segment(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # the last, acknowledged record rots: refuse, never drop it silently
    path.write_bytes(bytes(data))
    with pytest.raises(StartupError, match="corrupt"):
        WAL.open(tmp_path)


def test_corrupt_earlier_segment_refuses_even_at_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walmod, "SEGMENT_BYTES", 300)
    w = WAL.create(tmp_path, 1, 1)
    for i in range(1, 20):
        w.save(entries(i, 1))
    w.close()
    first = sorted(tmp_path.glob("*.wal"))[0]
    os.truncate(first, first.stat().st_size - 2)
    with pytest.raises(StartupError, match=first.name):
        WAL.open(tmp_path)


def test_a_failed_sync_poisons_the_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = WAL.create(tmp_path, 1, 1)

    def broken_fdatasync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_fdatasync)
    with pytest.raises(WALError):
        w.save(entries(1, 1))
    monkeypatch.undo()
    with pytest.raises(WALError, match="failed earlier"):
        w.save(entries(1, 1))  # never retry after a failed fsync


def test_member_mismatch_and_gaps_are_refused(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 2))
    w.save(entries(5, 1))  # a gap: entries 3 and 4 are missing
    w.close()
    with pytest.raises(StartupError, match=r"undecodable|follows"):
        WAL.open(tmp_path)


def test_any_bit_flip_before_the_last_record_is_refused(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 6), (1, 1, 6))
    w.save(entries(7, 1))
    w.close()
    path = segment(tmp_path)
    good = path.read_bytes()
    last_record = len(good) - (8 + len(walmod.msgpack.packb((walmod.ENTRY, 1, 7, 0, b"data-7"))))
    for offset in range(0, last_record, 3):
        bad = bytearray(good)
        bad[offset] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(StartupError):
            WAL.open(tmp_path)
        assert path.read_bytes() == bytes(bad), f"offset {offset}: the file was modified"


def test_received_snapshot_replaces_the_whole_log(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, 1, 1)
    w.save(entries(1, 8, term=1))  # a stale follower's log, partly conflicting with the leader's
    w.save_snapshot_mark(5, 3, voters=[1, 2, 3], replaces_log=True)
    w.save(entries(6, 2, term=3))
    w.close()
    st = WAL.open(tmp_path)[1]
    assert (st.snapshot_index, st.snapshot_voters) == (5, (1, 2, 3))
    assert [(e.index, e.term) for e in st.entries] == [(6, 3), (7, 3)]
