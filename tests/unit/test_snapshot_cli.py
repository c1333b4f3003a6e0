"""``raftkv snapshot status|restore`` as a user meets them: etcdctl's output formats, errors on stderr
naming the problem with exit code 1, and nothing written when a restore is refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from raftkv_cmd import snapshot as cli

from kvstore.bbolt import Nested, write_file
from kvstore.mvcc.revision import rev_to_bytes
from proto.mvccpb.kv_pb2 import KeyValue


def make_snapshot(path: Path) -> Path:
    import hashlib

    records = []
    for i in range(2, 50):
        kv = KeyValue(key=b"k%d" % i, value=b"v" * 100, create_revision=i, mod_revision=i, version=1)
        records.append((rev_to_bytes(i, 0), kv.SerializeToString()))
    out = io.BytesIO()
    write_file(out, [(b"key", Nested(records)), (b"meta", Nested())])
    db = out.getvalue()
    path.write_bytes(db + hashlib.sha256(db).digest())
    return path


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (9, "9 B"),
        (999, "999 B"),
        (16384, "16 kB"),
        (20480, "20 kB"),
        (9748480, "9.7 MB"),
        (2 << 30, "2.1 GB"),
    ],
)
def test_sizes_are_printed_as_etcdctl_prints_them(size: int, text: str) -> None:
    assert cli._humanize_bytes(size) == text


def test_status_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_snapshot(tmp_path / "s.db")
    assert cli.main(["status", str(path)]) == 0
    simple = capsys.readouterr().out.strip()
    hash_hex, rev, keys, size = simple.split(", ")
    assert (rev, keys, size) == ("49", "48", "29 kB")  # 7 pages of 4 KiB
    assert cli.main(["status", str(path), "-w", "json"]) == 0
    assert capsys.readouterr().out.strip() == (
        f'{{"hash":{int(hash_hex, 16)},"revision":49,"totalKey":48,"totalSize":28672}}'
    )
    assert cli.main(["status", str(path), "-w", "table"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |"


def test_status_of_a_damaged_file_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_snapshot(tmp_path / "s.db")
    path.write_bytes(path.read_bytes()[:9000])
    assert cli.main(["status", str(path)]) == 1
    assert "file is truncated" in capsys.readouterr().err
    assert cli.main(["status", str(tmp_path / "nope.db")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def test_restore_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_snapshot(tmp_path / "s.db")
    bad = tmp_path / "bad.db"
    data = bytearray(good.read_bytes())
    data[3 * 4096 + 200] ^= 1
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    args = ["--name", "a", "--initial-cluster", "a=http://127.0.0.1:2380"]
    args += ["--initial-advertise-peer-urls", "http://127.0.0.1:2380"]
    assert cli.main(["restore", str(bad), "--data-dir", str(out / "a.etcd"), *args]) == 1
    assert "is corrupt: the sha256" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert cli.main(["restore", str(good), "--data-dir", str(out / "a.etcd"), *args]) == 0
    assert "revision 49, 48 stored revisions" in capsys.readouterr().out
    assert cli.main(["restore", str(good), "--data-dir", str(out / "a.etcd"), *args]) == 1
    assert "exists" in capsys.readouterr().err
