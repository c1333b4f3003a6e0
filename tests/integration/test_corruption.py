"""Corruption checks on a real three-member cluster: one member's backend is altered on disk while it is
down; started with --experimental-initial-corrupt-check it refuses to run, and started without, the
leader's periodic check (--experimental-corrupt-check-time) raises CORRUPT, after which writes are
refused with etcd's error and reads go on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chaos.cluster import LocalCluster
from kvstore.mvcc import Backend
from proto.mvccpb.kv_pb2 import KeyValue
from tests.procs import etcdctl, free_port

pytestmark = pytest.mark.integration


def wait_for(cond, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def alter_a_value(data_dir: Path) -> bytes:
    """Changes the value of one stored revision in the member's backend, as a bad disk would."""
    backend = Backend(data_dir / "member" / "db")
    try:
        with backend.begin_write() as txn:
            cursor = txn.cursor(db=backend.key_db)
            assert cursor.first()
            while not KeyValue.FromString(cursor.value()).key.startswith(b"data/"):
                assert cursor.next()
            kv = KeyValue.FromString(cursor.value())
            kv.value = b"flipped!"
            txn.put(cursor.key(), kv.SerializeToString(), db=backend.key_db)
            return kv.key
    finally:
        backend.close()


def test_an_altered_backend_is_found(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "cluster", size=3, ports=[(free_port(), free_port()) for _ in range(3)])
    for m in c.members:
        m.args = ["--experimental-corrupt-check-time=1s"]
    c.start(timeout=60)
    try:
        eps = c.endpoints
        for i in range(30):
            etcdctl(eps, "put", f"data/{i}", f"value {i}", check=True)
        lead = c.wait_ready()
        victim = next(
            m for m in c.members if etcdctl(m.endpoint, "endpoint", "status").stdout.split(", ")[1] != f"{lead:x}"
        )
        head = etcdctl(victim.endpoint, "get", "data/29", "--print-value-only", "--consistency=s", check=True)
        assert head.stdout.strip() == "value 29"
        c.stop_member(victim.name)
        key = alter_a_value(victim.data_dir)
        assert etcdctl(eps, "alarm", "list", check=True).stdout.strip() == ""  # nothing found while it is down

        # with the initial check, the altered member refuses to serve
        victim.args = [*victim.args, "--experimental-initial-corrupt-check"]
        with pytest.raises((RuntimeError, TimeoutError)):
            c.start_member(victim.name, timeout=60)
        assert victim.proc is not None and victim.proc.wait(30) == 2
        assert "found data inconsistency with peers" in victim.log_path.read_text()
        c.stop_member(victim.name)

        # without it, it serves, and the leader's periodic check raises CORRUPT through the log
        victim.args = ["--experimental-corrupt-check-time=1s"]
        c.start_member(victim.name, timeout=60)
        got = etcdctl(victim.endpoint, "get", key.decode(), "--print-value-only", "--consistency=s", check=True)
        assert got.stdout.strip() == "flipped!"
        wait_for(lambda: etcdctl(eps, "alarm", "list").stdout.strip() == "alarm:CORRUPT", "the CORRUPT alarm")
        for m in c.members:  # each member shows it once it applied it (the restarted one may still be catching up)
            wait_for(
                lambda m=m: (
                    "alarm:CORRUPT" in etcdctl(m.endpoint, "endpoint", "status", "-w", "json", check=True).stdout
                ),
                f"the CORRUPT alarm in {m.name}'s status",
            )
        refused = etcdctl(eps, "put", "more", "v")
        assert refused.returncode != 0 and "etcdserver: corrupt cluster" in refused.stderr
        assert etcdctl(eps, "get", "data/3", "--print-value-only", check=True).stdout.strip() == "value 3"
    finally:
        c.stop()
