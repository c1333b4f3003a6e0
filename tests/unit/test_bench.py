"""bench's pure parts, in process: option parsing, the compare-and-swap request and its answer, rows,
ratios and tables from made-up results, memory readings. No server, no timing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import kv, memory
from proto.etcdserverpb import rpc_pb2 as pb


def result(workload: str, clients: int, server: str, ops_per_s: float, **extra: object) -> kv.Result:
    fields: dict[str, object] = dict(
        workload=workload,
        server=server,
        clients=clients,
        seconds=1.0,
        ops=int(ops_per_s),
        errors=0,
        ops_per_s=ops_per_s,
        p50_ms=1.0,
        p99_ms=2.0,
        mean_ms=1.0,
        max_ms=3.0,
        server_cpu_s=0.5,
        client_cpu_s=0.2,
        other_cpu_s=0.1,
    )
    fields.update(extra)
    return kv.Result(**fields)  # type: ignore[arg-type]


def test_kv_clients_take_a_comma_list() -> None:
    cfg, _ = kv.parse_args(["--clients", "64,256", "--workloads", "put,txn"])
    assert cfg.clients == [64, 256] and cfg.workloads == ["put", "txn"]
    assert kv.parse_args([])[0].clients == [64]
    for bad in ("64,64", "0", "a", ","):
        with pytest.raises(SystemExit):
            kv.parse_args(["--clients", bad])


def test_cas_request_compares_mod_revision_and_reads_on_failure() -> None:
    req = pb.TxnRequest.FromString(kv.cas_request(b"k", 7, b"v"))
    (cmp,) = req.compare
    assert (cmp.key, cmp.target, cmp.result, cmp.mod_revision) == (b"k", pb.Compare.MOD, pb.Compare.EQUAL, 7)
    assert req.success[0].request_put.key == b"k" and req.success[0].request_put.value == b"v"
    assert req.failure[0].request_range.key == b"k"

    swapped = pb.TxnResponse(header=pb.ResponseHeader(revision=12), succeeded=True)
    assert kv.cas_outcome(swapped.SerializeToString()) == (True, 12)
    failed = pb.TxnResponse(header=pb.ResponseHeader(revision=30), succeeded=False)
    failed.responses.add().response_range.kvs.add(key=b"k", mod_revision=21)
    assert kv.cas_outcome(failed.SerializeToString()) == (False, 21)
    assert kv.cas_outcome(pb.TxnResponse(succeeded=False).SerializeToString()) == (False, 0)
    assert kv.cas_key(3) != kv.cas_key(4)


def test_kv_rows_ratios_and_table_per_client_count() -> None:
    results = [
        result("put", 64, "raftkv", 200.0),
        result("put", 64, "etcd", 100.0),
        result("put", 256, "raftkv", 300.0),
        result("put", 256, "etcd", 600.0),
        result("txn", 64, "raftkv", 50.0, cas_failed=2),
        result("txn", 64, "etcd", 100.0),
    ]
    assert kv.rows(results) == [("put", 64), ("put", 256), ("txn", 64)]
    rat = kv.row_ratios(results)
    assert [(x["workload"], x["clients"], x["ops_per_s"]) for x in rat] == [
        ("put", 64, 2.0),
        ("put", 256, 0.5),
        ("txn", 64, 0.5),
    ]
    cfg = kv.Config(clients=[64, 256], workloads=["put", "txn"], single_seconds=0)
    text = kv.table(results, cfg)
    body = text.splitlines()[2:5]
    assert [line.split("|")[0].split()[-1] for line in body] == ["64", "256", "64"]
    assert body[2].startswith("txn compare-and-swap")
    assert "raftkv 64 clients 48 swapped, 2 failed" in text


def test_kv_quietest_keeps_each_client_count() -> None:
    a = result("put", 64, "raftkv", 1.0, other_cpu_s=0.5, round=0)
    b = result("put", 64, "raftkv", 2.0, other_cpu_s=0.1, round=1)
    c = result("put", 256, "raftkv", 3.0, other_cpu_s=0.9, round=0)
    assert kv.quietest([a, b, c]) == [b, c]


def test_txn_cannot_be_paced() -> None:
    import asyncio

    with pytest.raises(ValueError, match="closed-loop"):
        asyncio.run(kv.drive(None, "txn", [], 1, 1, 0.0, 1.0, rate=10.0))  # type: ignore[arg-type]


def test_memory_reading_of_this_process() -> None:
    r = memory.reading(os.getpid())
    assert 0 < r.rss <= r.peak


def test_memory_disk_bytes_counts_allocated_blocks(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10_000)
    assert memory.disk_bytes(tmp_path) >= 10_000
    assert memory.disk_bytes(tmp_path / "missing") == 0


def test_memory_options() -> None:
    cfg, _ = memory.parse_args([])
    assert (cfg.keys, cfg.value_size, cfg.members, cfg.txn_ops) == (1_000_000, 256, 3, 128)
    cfg, _ = memory.parse_args(["--members", "1", "--keys", "20000", "--value-size", "100000"])
    assert cfg.members == 1 and cfg.keys == 20000 and cfg.txn_ops * (100_000 + 64) <= memory.TXN_BYTES
    with pytest.raises(SystemExit):
        memory.parse_args(["--value-size", "100000", "--txn-ops", "128"])  # a Txn past the limit
    with pytest.raises(SystemExit):
        memory.parse_args(["--members", "2"])


def test_memory_ratios_and_table() -> None:
    def member(name: str, role: str, rest: int, loaded: int) -> memory.Member:
        return memory.Member(
            name, role, 1, memory.Reading(rest, rest), memory.Reading(loaded, loaded), disk_bytes=loaded
        )

    mib = memory.MIB
    raftkv = memory.Result("raftkv", 10, 256, 2.0, 5.0, 10, [member("m2", "leader", 60 * mib, 90 * mib)])
    etcd = memory.Result("etcd", 10, 256, 1.0, 10.0, 10, [member("m1", "leader", 30 * mib, 45 * mib)])
    assert memory.ratios([raftkv, etcd]) == {
        "rest_rss": 2.0,
        "rest_peak": 2.0,
        "loaded_rss": 2.0,
        "loaded_peak": 2.0,
        "load_seconds": 2.0,
    }
    text = memory.table([raftkv, etcd], memory.Config(members=1, keys=10))
    assert "raftkv  m2      leader" in text and "90.0" in text and "raftkv/etcd" in text
