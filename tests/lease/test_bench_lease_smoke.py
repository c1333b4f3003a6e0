"""bench.lease end to end, briefly: both servers, every workload, well-formed JSON. No timing is asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.etcd]


def test_bench_lease_runs_against_both_servers(tmp_path: Path) -> None:
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/test installs it)"
    args = ["--seconds", "0.5", "--warmup", "0.2", "--single-seconds", "0.3", "--leases", "50", "--streams", "4"]
    args += ["--channels", "2", "--results-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.lease", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = tmp_path.glob("lease-*.json")
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "lease"
    assert set(doc["servers"]) == {"raftkv", "etcd"}
    rows = ["keepalive", "keepalive-1", "grant", "ttl"]
    assert [(r["workload"], r["server"]) for r in doc["results"]] == [(w, s) for w in rows for s in ("raftkv", "etcd")]
    for r in doc["results"]:
        assert r["ops"] > 0, r
        assert r["errors"] == 0, r
        assert r["expired_answers"] == 0, r
