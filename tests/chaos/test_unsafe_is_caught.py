"""The checkers can fail: each flaw is made to happen by a constructed schedule, and is caught.

``chaos.scenarios`` scripts each anomaly step by step (every step waits for the cluster state it
needs), so it happens on every run however slow the machine, instead of hoping a random run hits
it. Each script runs twice: against the flawed build the checker must say invalid, and the step
that shows the flaw must have happened (the stale value read, the acknowledged write gone);
against the safe build the same script must be valid.

The server flaws are ``RAFTKV_UNSAFE`` modes (raft/unsafe.py), honoured in
``kvstore/server/member.py`` and ``raft/node/ready.py`` (chaos/README.md, "Unsafe modes"). The lock's
flaw is the client's: a lease-based lock used without fencing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from chaos.runner import RunConfig, run
from chaos.scenarios import get

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# scenario, the unsafe mode it is meant for, and the note that says the flaw showed
SERVER_FLAWS = [("stale-read", "stale-reads", "stale"), ("lost-ack", "ack-before-fsync", "lost")]


def patched() -> bool:
    member = (REPO / "kvstore" / "server" / "member.py").read_text()
    node = (REPO / "raft" / "node" / "ready.py").read_text()
    return "unsafe.STALE_READS" in member and "unsafe.ACK_BEFORE_FSYNC" in node


def play(tmp_path: Path, name: str, unsafe: str | None) -> tuple[int, dict[str, Any], Path]:
    out = tmp_path / name
    sc = get(name)
    log = io.StringIO()
    cfg = RunConfig(
        workload=sc.workload,
        scenario=name,
        seed=11,
        out=out,
        progress=False,
        member_env={"RAFTKV_UNSAFE": unsafe} if unsafe else {},
    )
    code, verdict = run(cfg, stream=log)
    assert not verdict["aborted"], f"{verdict['notes'].get('error')}\n{log.getvalue()}"
    kinds = {f["kind"] for f in verdict["faults"] if f["f"] == "start"}
    assert kinds, f"the script injected no fault:\n{log.getvalue()}"
    return code, verdict, out


@pytest.mark.parametrize(("name", "mode", "flaw"), SERVER_FLAWS)
def test_flawed_build_is_caught(tmp_path: Path, name: str, mode: str, flaw: str) -> None:
    assert patched(), "the server no longer reads raft.unsafe's flags: see chaos/README.md (Unsafe modes)"
    code, verdict, out = play(tmp_path, name, mode)
    notes = verdict["notes"]["scenario"]
    assert notes[flaw] is True, json.dumps(notes, indent=1)
    assert verdict["verdict"] == "invalid", json.dumps(verdict, indent=1)[:3000]
    assert code == 1
    assert (out / "timeline.html").exists()


@pytest.mark.parametrize(("name", "mode", "flaw"), SERVER_FLAWS)
def test_the_same_schedule_on_the_safe_build_is_valid(tmp_path: Path, name: str, mode: str, flaw: str) -> None:
    code, verdict, _ = play(tmp_path, name, None)
    notes = verdict["notes"]["scenario"]
    assert notes[flaw] is False, json.dumps(notes, indent=1)
    assert verdict["verdict"] == "valid", json.dumps(verdict, indent=1)[:3000]
    assert code == 0, verdict["notes"]
    if name == "stale-read":  # not vacuous: the isolated old leader refused the read rather than serve it
        assert notes["read_through_old_leader"]["outcome"] == "fail", notes


def test_a_lock_without_fencing_loses_an_update_and_fencing_prevents_it(tmp_path: Path) -> None:
    code, verdict, out = play(tmp_path, "lock-stall", None)
    checked = verdict["checker"]
    # with fencing: exact (the stalled holder's fenced write refused), so the run is valid
    assert verdict["verdict"] == "valid", json.dumps(checked, indent=1)
    assert code == 0
    assert checked["fenced"] == {"appends_ok": 1, "refused_by_fence": 1, "unknown": 0, "final_length": 1}
    # without fencing: the successor's acknowledged entry is gone, erased by the stalled holder
    assert checked["unsafe_without_fencing"] is True
    assert checked["unfenced"]["lost_updates"] == 1 and checked["unfenced"]["stalled_holders"] == 1
    assert "stalled for longer than its lease" in (out / "unfenced.html").read_text()
