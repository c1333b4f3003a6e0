"""bench.kv end to end, briefly: both servers, every workload, well-formed JSON. No timing is asserted."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ROWS = ["put", "range", "srange", "put-1"]
SERVERS = ["raftkv", "etcd"]


def test_bench_kv_runs_against_both_servers(tmp_path: Path) -> None:
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/test installs it)"
    args = ["--seconds", "1", "--warmup", "0.2", "--single-seconds", "0.5", "--clients", "4", "--channels", "2"]
    args += ["--keys", "100", "--value-size", "64", "--results-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.kv", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    (path,) = tmp_path.glob("kv-*.json")
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "kv"
    assert doc["machine"]["cpus"] >= 1
    assert doc["config"]["clients"] == 4 and doc["config"]["value_size"] == 64
    assert set(doc["servers"]) == set(SERVERS)
    assert doc["servers"]["etcd"].startswith("3.")

    results = doc["results"]
    assert [(r["workload"], r["server"]) for r in results] == [(w, s) for w in ROWS for s in SERVERS]
    for r in results:
        assert r["clients"] == (1 if r["workload"] == "put-1" else 4)
        assert r["ops"] > 0, r
        assert r["errors"] == 0, r
        for name in ("ops_per_s", "p50_ms", "p99_ms", "mean_ms", "max_ms", "server_cpu_s", "client_cpu_s"):
            assert isinstance(r[name], float) and math.isfinite(r[name]) and r[name] >= 0, (name, r)
        assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert set(doc["ratios"]) == set(ROWS)
    assert all(set(v) == {"ops_per_s", "p50_ms", "p99_ms"} for v in doc["ratios"].values())

    # the printed table has a row per workload and names the results file
    for title in ("put", "range (linearizable)", "range (serializable)", "put, 1 client"):
        assert any(line.startswith(title + " ") for line in proc.stdout.splitlines()), proc.stdout
    assert str(path) in proc.stdout
