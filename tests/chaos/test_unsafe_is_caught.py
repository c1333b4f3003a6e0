"""The checker can fail: a deliberately unsafe raftkv is caught, and the same run on the safe build passes.

``RAFTKV_UNSAFE`` (read by raft/unsafe.py) makes the server misbehave on purpose:

- ``stale-reads``: linearizable reads are served from the member's local state, without ReadIndex;
- ``ack-before-fsync``: followers acknowledge appended entries before they are on disk.

The same short run, partitions and kills (all members killed, the old leader restarted last),
is invalid against each unsafe mode and valid against the safe build. The server honours the
variable in ``kvstore/server/member.py`` and ``raft/node.py`` (chaos/README.md, "Unsafe modes").
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from chaos.runner import RunConfig, run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NEMESIS = "partition,kill:all-leader-last"


def patched() -> bool:
    member = (REPO / "kvstore" / "server" / "member.py").read_text()
    node = (REPO / "raft" / "node.py").read_text()
    return "unsafe.STALE_READS" in member and "unsafe.ACK_BEFORE_FSYNC" in node


def chaos_run(tmp_path: Path, unsafe: str | None) -> tuple[int, dict, Path]:
    out = tmp_path / "run"
    cfg = RunConfig(
        workload="register",
        nemesis=NEMESIS,
        time_s=16,
        concurrency=30,
        interval=2.5,
        fault_duration=1.5,
        seed=11,
        converge_timeout=12,
        out=out,
        progress=False,
        member_env={"RAFTKV_UNSAFE": unsafe} if unsafe else {},
    )
    code, verdict = run(cfg, stream=io.StringIO())
    return code, verdict, out


@pytest.mark.parametrize("mode", ["stale-reads", "ack-before-fsync"])
def test_unsafe_mode_is_caught(tmp_path: Path, mode: str) -> None:
    assert patched(), "the server no longer reads raft.unsafe's flags: see chaos/README.md (Unsafe modes)"
    code, verdict, out = chaos_run(tmp_path, mode)
    kinds = {f["kind"] for f in verdict["faults"] if f["f"] == "start"}
    assert kinds == {"partition", "kill"}, verdict["faults"]
    assert verdict["verdict"] == "invalid", json.dumps(verdict, indent=1)[:3000]
    assert code == 1
    assert (out / "timeline.html").exists()


def test_the_same_run_on_the_safe_build_is_valid(tmp_path: Path) -> None:
    code, verdict, _ = chaos_run(tmp_path, None)
    assert verdict["verdict"] == "valid", json.dumps(verdict, indent=1)[:3000]
    assert code == 0
