"""raft.snapshot.SnapshotDir: file names, start-up cleanup, finding a received snapshot."""

from __future__ import annotations

import zlib
from pathlib import Path

from raft import snapshot as snapfiles
from raft.snapshot import SnapshotDir


def test_a_received_snapshot_is_found_by_term_and_index(tmp_path: Path) -> None:
    d = SnapshotDir(tmp_path / "snap")
    d.prepare()
    f, tmp = d.open_incoming(sender=0xA1, index=0x30)
    crc = snapfiles.write_chunk(f, b"hello ", 0)
    crc = snapfiles.write_chunk(f, b"world", crc)
    final = d.received_path(0xA1, term=7, index=0x30)
    snapfiles.commit(f, tmp, final)
    assert crc == zlib.crc32(b"hello world")
    assert final.read_bytes() == b"hello world"
    assert not tmp.exists()
    assert d.find_received(7, 0x30) == final
    assert d.find_received(7, 0x31) is None
    assert d.find_received(6, 0x30) is None


def test_prepare_removes_what_a_crash_left_behind(tmp_path: Path) -> None:
    d = SnapshotDir(tmp_path / "snap")
    d.prepare()
    f, _ = d.open_incoming(sender=2, index=9)  # a transfer cut short
    f.close()
    (d.path / "received-2-3-9.snap").write_bytes(b"old")  # complete, but no longer needed
    (d.path / "outgoing-123-0").mkdir()
    (d.path / "outgoing-123-0" / "data.mdb").write_bytes(b"copy")
    (d.path / "unrelated").write_bytes(b"kept")
    d.prepare()
    assert sorted(p.name for p in d.path.iterdir()) == ["unrelated"]


def test_reading_in_chunks_and_discarding(tmp_path: Path) -> None:
    src = tmp_path / "src"
    payload = bytes(range(256)) * (snapfiles.CHUNK_SIZE // 256 * 2 + 3)
    src.write_bytes(payload)
    f, size = snapfiles.open_read(src)
    assert size == len(payload)
    got, crc = b"", 0
    while True:
        data, crc = snapfiles.read_chunk(f, crc)
        if not data:
            break
        assert len(data) <= snapfiles.CHUNK_SIZE
        got += data
    snapfiles.discard(f, None)
    assert got == payload and crc == zlib.crc32(payload)
    assert src.exists()  # discard without a temp file removes nothing

    d = SnapshotDir(tmp_path / "snap")
    d.prepare()
    g, tmp = d.open_incoming(sender=1, index=1)
    snapfiles.discard(g, tmp)
    assert not tmp.exists()
