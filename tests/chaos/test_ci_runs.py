"""Short chaos runs of every workload against real clusters, as CI can afford them (about 110 s in all).

Each run starts its own three-member cluster, injects faults, heals, checks and writes a report.
The longer soak is a documented command (chaos/README.md), not a test.

Random faults find what they happen to hit, so these runs assert only what must hold of a correct
store on any machine, however slow: the history is valid and the cluster converged. How much a
run checks is not left to the machine's speed either: a run goes on past its time until its
workers have completed ``min_ok`` operations (up to four times its time), so a slow machine gets
a longer run, not a weaker one. Demonstrations that a checker catches a flaw are constructed
schedules, in test_unsafe_is_caught.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from chaos.runner import RunConfig, run
from chaos.targets import ExternalTarget, TargetError
from tests.procs import EtcdMember

pytestmark = pytest.mark.integration


def chaos(tmp_path: Path, **kw: Any) -> tuple[int, dict[str, Any], Path]:
    out = tmp_path / "run"
    log = io.StringIO()
    cfg = RunConfig(
        out=out,
        progress=False,
        seed=kw.pop("seed", 7),
        interval=kw.pop("interval", 2.5),
        fault_duration=kw.pop("fault_duration", 2.0),
        **kw,
    )
    code, verdict = run(cfg, stream=log)
    assert (out / "history.jsonl").stat().st_size > 0
    assert json.loads((out / "verdict.json").read_text())["verdict"] == verdict["verdict"]
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert verdict["faults"], f"no fault was injected:\n{log.getvalue()}"
    return code, verdict, out


def test_register_under_partitions_kills_and_pauses(tmp_path: Path) -> None:
    code, v, _ = chaos(tmp_path, workload="register", nemesis="partition,kill,pause", time_s=8, min_ok=200)
    assert code == 0, json.dumps(v, indent=1)[:3000]
    assert v["ops"]["ok"] >= 200 and v["converged"]


def test_append_under_kills_and_partitions(tmp_path: Path) -> None:
    code, v, _ = chaos(tmp_path, workload="append", nemesis="kill,partition:bridge", time_s=7, min_ok=200)
    assert code == 0, json.dumps(v, indent=1)[:3000]
    assert v["checker"]["serializability"]["txns"] >= 200


def test_append_under_member_replacements(tmp_path: Path) -> None:
    """Members removed (running, or killed with their disk wiped) and added afresh under load: no
    acknowledged transaction lost, and the new members catch up (the cluster converges)."""
    code, v, _ = chaos(
        tmp_path, workload="append", nemesis="member:wipe,member:replace", time_s=10, min_ok=200, interval=2.0
    )
    assert code == 0, json.dumps(v, indent=1)[:3000]
    assert v["converged"]
    healed = [f for f in v["faults"] if f["f"] == "stop" and f["kind"] == "member"]
    assert healed and all("added again afresh" in f["note"] for f in healed), v["faults"]


def test_watch_under_pauses_and_kills(tmp_path: Path) -> None:
    code, v, _ = chaos(tmp_path, workload="watch", nemesis="pause,kill", time_s=7, min_ok=200)
    assert code == 0, json.dumps(v, indent=1)[:3000]
    # every watcher and every member's final watch had a session, and they saw the writes
    assert v["checker"]["sessions"] >= 3 + 3 and v["checker"]["events_received"] >= 200
    assert v["checker"]["final_state"]["checked"], v["checker"]["final_state"]


def test_lock_with_fencing_is_safe_under_pauses_and_stalls(tmp_path: Path) -> None:
    """Fencing keeps the resource exact whatever the pauses and stalls did (the unfenced list's
    lost updates are shown on purpose by the lock-stall scenario, not hoped for here)."""
    code, v, _ = chaos(
        tmp_path,
        workload="lock",
        nemesis="pause:one",
        time_s=9,
        concurrency=4,
        min_ok=12,  # acquire, two appends and release: three holds at least
        workload_options={"stall_chance": 0.3, "stall_first": True},
    )
    assert code == 0, json.dumps(v, indent=1)[:3000]
    assert v["checker"]["acquisitions"] >= 3, v["checker"]


def test_lock_service_with_fencing_is_safe_under_kills_and_partitions(tmp_path: Path) -> None:
    """The same lock taken through etcd's Lock service (the recipe run inside the server): members
    killed under waiting Lock calls and partitions between them; fencing keeps the resource exact."""
    code, v, _ = chaos(
        tmp_path,
        workload="lock",
        nemesis="kill:one,partition:leader",
        time_s=9,
        concurrency=4,
        min_ok=12,
        workload_options={"via": "service", "stall_chance": 0.3, "stall_first": True},
    )
    assert code == 0, json.dumps(v, indent=1)[:3000]
    assert v["checker"]["acquisitions"] >= 3, v["checker"]


def test_etcd_register_under_partitions(tmp_path: Path) -> None:
    code, v, _ = chaos(tmp_path, workload="register", nemesis="partition", time_s=5, etcd=True)
    assert v["target"] == "etcd"
    assert code == 0, json.dumps(v, indent=1)[:3000]


def test_etcd_started_elsewhere_given_by_endpoints_and_pids(tmp_path: Path) -> None:
    """Endpoints mode: a cluster the tool did not start; kills and pauses go to the pids given."""
    members = [EtcdMember(f"e{i}", tmp_path / f"e{i}.etcd") for i in range(1, 4)]
    cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        m.extra = [f"--initial-cluster={cluster}", "--initial-cluster-token=endpoints-mode"]
        m.start(wait=False)
    try:
        for m in members:
            m.wait_ready()
        endpoints = [m.endpoint for m in members]
        with pytest.raises(TargetError, match="does not listen on port"):
            ExternalTarget(endpoints, [members[1].proc.pid, members[0].proc.pid, members[2].proc.pid])  # type: ignore[union-attr]
        code, v, _ = chaos(
            tmp_path,
            workload="register",
            nemesis="kill:one,pause:one",
            time_s=5,
            endpoints=endpoints,
            pids=[m.proc.pid for m in members],  # type: ignore[union-attr]
        )
        assert v["target"] == "external"
        assert code == 0, json.dumps(v, indent=1)[:3000]
    finally:
        for m in members:
            m.stop()
        # members the tool restarted were left running, as documented
        kill_processes_mentioning(str(tmp_path))


def kill_processes_mentioning(text: str) -> None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
