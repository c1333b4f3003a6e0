"""bench.kv and bench.memory end to end, briefly: both servers, every workload, well-formed JSON.

No timing or size is asserted: only the structure of the results, and what must hold on any machine.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ROWS = ["put", "range", "srange", "txn", "put-1"]
SERVERS = ["raftkv", "etcd"]


def test_bench_kv_runs_against_both_servers(tmp_path: Path) -> None:
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/test installs it)"
    args = ["--seconds", "0.6", "--warmup", "0.2", "--single-seconds", "0.5", "--clients", "2,4", "--channels", "2"]
    args += ["--keys", "100", "--value-size", "64", "--results-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.kv", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    (path,) = tmp_path.glob("kv-*.json")
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "kv"
    assert doc["machine"]["cpus"] >= 1
    assert doc["config"]["clients"] == [2, 4] and doc["config"]["value_size"] == 64
    assert set(doc["servers"]) == set(SERVERS)
    assert doc["servers"]["etcd"].startswith("3.")

    results = doc["results"]
    rows = [(w, c) for w in ROWS[:-1] for c in (2, 4)] + [("put-1", 1)]
    assert [(r["workload"], r["clients"], r["server"]) for r in results] == [
        (w, c, s) for w, c in rows for s in SERVERS
    ]
    for r in results:
        assert r["ops"] > 0, r
        assert r["errors"] == 0, r
        for name in ("ops_per_s", "p50_ms", "p99_ms", "mean_ms", "max_ms", "server_cpu_s", "client_cpu_s"):
            assert isinstance(r[name], float) and math.isfinite(r[name]) and r[name] >= 0, (name, r)
        assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        if r["workload"] == "txn":
            # a key per client: a swap fails at most on each client's first try (its key written before)
            assert 0 <= r["cas_failed"] <= r["clients"] and r["ops"] > r["cas_failed"], r
        else:
            assert r["cas_failed"] == 0, r
    assert [(x["workload"], x["clients"]) for x in doc["ratios"]] == rows
    assert all(set(x) == {"workload", "clients", "ops_per_s", "p50_ms", "p99_ms"} for x in doc["ratios"])

    # the printed table has a row per workload and client count, and names the results file
    lines = proc.stdout.splitlines()
    titles = {"put": "put", "range": "range (linearizable)", "srange": "range (serializable)"}
    titles |= {"txn": "txn compare-and-swap", "put-1": "put, 1 client"}
    for w, c in rows:
        assert any(line.startswith(titles[w] + " ") and line.split("|")[0].split()[-1] == str(c) for line in lines), (
            w,
            c,
            proc.stdout,
        )
    assert "swapped" in proc.stdout
    assert str(path) in proc.stdout


def test_bench_kv_runs_three_member_clusters(tmp_path: Path) -> None:
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/test installs it)"
    args = ["--members", "3", "--seconds", "0.4", "--warmup", "0.1", "--single-seconds", "0.2", "--clients", "6"]
    args += ["--keys", "60", "--value-size", "32", "--rounds", "2", "--results-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.kv", *args], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    (path,) = tmp_path.glob("kv-3members-*.json")
    doc = json.loads(path.read_text())
    assert doc["config"]["members"] == 3
    assert doc["config"]["channels"] == 6  # two per member by default
    for kind in SERVERS:
        topology = doc["topology"][kind]
        assert topology["members"] == 3 and len(set(topology["endpoints"])) == 3
        assert topology["leader"] in ("m1", "m2", "m3")
    results = doc["results"]
    assert [(r["workload"], r["server"]) for r in results] == [(w, s) for w in ROWS for s in SERVERS]
    for r in results:
        assert r["ops"] > 0 and r["errors"] == 0, r
        assert r["clients"] == (1 if r["workload"] == "put-1" else 6), r
        assert r["members"] == 3 and len(r["member_cpu_s"]) == 3, r
        assert math.isclose(sum(r["member_cpu_s"]), r["server_cpu_s"], abs_tol=1e-6), r
    # two rounds: every row is reported once, from the round the rest of the machine was quietest
    everything = doc["all_results"]
    assert len(everything) == 2 * len(results) and {r["round"] for r in everything} == {0, 1}
    for r in results:
        same = [x for x in everything if (x["workload"], x["server"]) == (r["workload"], r["server"])]
        assert r in same and r["other_cpu_s"] == min(x["other_cpu_s"] for x in same)
    assert "3-member clusters" in proc.stdout and "quietest of 2 rounds" in proc.stdout


def test_bench_serving_runs_single_and_reuseport_servers(tmp_path: Path) -> None:
    args = ["--options", "aio-uvloop,sync-generic-2,aio-generic+gc-x2", "--seconds", "0.5", "--warmup", "0.2"]
    args += ["--clients", "8", "--channels", "2", "--keys", "50", "--results-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.serving", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp_path.glob("serving-*.json")
    doc = json.loads(path.read_text())
    rows = {r["option"]: r for r in doc["summary"]}
    assert set(rows) == {"aio-uvloop", "sync-generic-2", "aio-generic+gc-x2"}
    assert rows["aio-generic+gc-x2"]["processes"] == 2
    for r in rows.values():
        assert r["ops_per_s"] > 0 and r["errors"] == 0, r
        assert r["server_us"] > 0 and r["grpc"].count(".") == 2, r
    (x2,) = [m for m in doc["measurements"] if m["option"] == "aio-generic+gc-x2"]
    assert len(x2["result"]["member_cpu_s"]) == 2
    assert all(c > 0 for c in x2["result"]["member_cpu_s"]), "the connections reach both processes"


def test_check_perf_reads_etcdctl_verdicts() -> None:
    from bench.check_perf import parse

    passed = parse(
        " 60 / 60 Boooooooooooooooooooooooooo! 100.00% 1m0s\nPASS: Throughput is 151 writes/s\n"
        "PASS: Slowest request took 0.046211s\nPASS: Stddev is 0.003528s\nPASS\n",
        0,
    )
    assert passed.passed and passed.throughput == 151 and passed.throughput_ok
    assert passed.slowest_s == 0.046211 and passed.slowest_ok and passed.stddev_s == 0.003528 and passed.stddev_ok
    failed = parse(
        "\r 10 / 60 Booo 16.67%\r 60 / 60 Boooooo! 100.00% 1m0s\nFAIL: Throughput too low: 120 writes/s\n"
        "Slowest request took too long: 0.786915s\nPASS: Stddev is 0.063215s\nFAIL\n",
        1,
    )
    assert not failed.passed and failed.throughput == 120 and failed.throughput_ok is False
    assert failed.slowest_s == 0.786915 and failed.slowest_ok is False and failed.stddev_ok
    assert failed.lines[-1] == "FAIL"
    assert not parse("Error: context deadline exceeded\n", 1).passed


def test_bench_metrics_runs_and_sees_the_counters_move(tmp_path: Path) -> None:
    args = ["--seconds", "1", "--warmup", "0.2", "--rounds", "1", "--interval", "0.2", "--scrapes", "5"]
    args += ["--workloads", "put", "--clients", "4", "--channels", "2", "--keys", "100", "--value-size", "64"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.metrics", *args, "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp_path.glob("metrics-*.json")
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "metrics" and doc["cpu_ms_per_scrape"] > 0 and doc["bytes_per_scrape"] > 1000
    windows = doc["windows"]
    assert sorted(w["scraping"] for w in windows) == [False, True]
    scraped = next(w for w in windows if w["scraping"])
    assert scraped["scrapes"] >= 2
    # counted at apply and at the answer: the same puts, give or take those in flight at a scrape
    assert scraped["puts_counted"] > 0 and scraped["put_oks_counted"] > 0
    assert abs(scraped["puts_counted"] - scraped["put_oks_counted"]) <= 0.05 * scraped["puts_counted"] + 8
    assert set(doc["summary"]["put"]) == {
        "ops_per_s_without",
        "ops_per_s_with",
        "ratio_with_to_without",
        "scrape_cpu_share_of_load",
    }


def test_bench_memory_runs_three_member_clusters(tmp_path: Path) -> None:
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/test installs it)"
    args = ["--keys", "1000", "--value-size", "64", "--txn-ops", "50", "--settle", "0.2"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args, "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp_path.glob("memory-3members-*.json")
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "memory" and doc["config"]["members"] == 3 and doc["config"]["keys"] == 1000
    assert set(doc["servers"]) == set(SERVERS)
    assert [r["server"] for r in doc["results"]] == SERVERS
    for r in doc["results"]:
        assert r["keys_counted"] == 1000 and r["load_seconds"] > 0, r
        members = r["members"]
        assert [m["role"] for m in members] == ["leader", "follower", "follower"], members
        assert sorted(m["name"] for m in members) == ["m1", "m2", "m3"] and len({m["pid"] for m in members}) == 3
        for m in members:
            assert 0 < m["rest"]["rss"] <= m["rest"]["peak"], m
            assert 0 < m["loaded"]["rss"] <= m["loaded"]["peak"] and m["loaded"]["peak"] >= m["rest"]["peak"], m
            assert m["disk_bytes"] > 0, m
    assert set(doc["ratios"]) == {"rest_rss", "rest_peak", "loaded_rss", "loaded_peak", "load_seconds"}
    assert "raftkv/etcd" in proc.stdout and str(path) in proc.stdout
