"""chaos.launch, the one launcher of member processes, on small stand-in processes: output to the log
file and to a sink, the exit code, stopping a paused process, and a member that dies while waited for.
(Real members go through it in every integration test.)"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from chaos.launch import RAFTKV, MemberProcess, member_args
from tests.procs import wait_for

pytestmark = pytest.mark.integration


def stand_in(tmp_path: Path, name: str = "m1") -> MemberProcess:
    return MemberProcess(name, "127.0.0.1", 1, 2, tmp_path / f"{name}.etcd", tmp_path / f"{name}.log")


PRINTS_THEN_WAITS = "import sys, time\nprint('hello'); print('world'); sys.stdout.flush()\ntime.sleep(600)\n"


def test_output_goes_to_the_log_and_to_the_sink_and_stop_ends_it(tmp_path: Path) -> None:
    m = stand_in(tmp_path)
    lines: list[tuple[str, str]] = []
    m.spawn([sys.executable, "-c", PRINTS_THEN_WAITS], sink=lambda name, line: lines.append((name, line)))
    assert m.running() and m.pid is not None
    wait_for("both lines", lambda: len(lines) == 2, timeout=30)
    assert lines == [("m1", "hello"), ("m1", "world")]
    assert m.stop() == -signal.SIGTERM
    assert not m.running() and m.proc is None
    assert m.log_path.read_text() == "hello\nworld\n"
    assert m.stop() is None  # not running: nothing to do


def test_without_a_sink_the_output_is_appended_to_the_log_file(tmp_path: Path) -> None:
    m = stand_in(tmp_path)
    m.log_path.write_text("before\n")
    m.spawn([sys.executable, "-c", "print('after')"])
    wait_for("the exit", lambda: not m.running(), timeout=30)
    assert m.stop() == 0
    assert m.log_path.read_text() == "before\nafter\n"


def test_a_paused_member_is_resumed_to_act_on_sigterm(tmp_path: Path) -> None:
    m = stand_in(tmp_path)
    handler = (
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "print('ready', flush=True)\ntime.sleep(600)\n"
    )
    m.spawn([sys.executable, "-c", handler])
    wait_for("the handler", lambda: "ready" in m.log_tail(), timeout=30)
    m.send_signal(signal.SIGSTOP)
    assert m.stop(timeout=60) == 7  # its own exit, not the SIGKILL after the timeout


def test_waiting_for_a_member_that_exits_says_so(tmp_path: Path) -> None:
    m = stand_in(tmp_path)
    m.spawn([sys.executable, "-c", "print('bad flag'); raise SystemExit(2)"])
    with pytest.raises(RuntimeError, match="exited with 2"):
        m.wait_status(timeout=60)
    assert "bad flag" in m.log_tail()
    m.stop()


def test_the_flags_are_etcds() -> None:
    args = member_args("m1", Path("/d"), "http://h:1", "http://h:2", "m1=http://h:2", "tok", "new")
    assert args == [
        "--name=m1",
        "--data-dir=/d",
        "--listen-client-urls=http://h:1",
        "--advertise-client-urls=http://h:1",
        "--listen-peer-urls=http://h:2",
        "--initial-advertise-peer-urls=http://h:2",
        "--initial-cluster=m1=http://h:2",
        "--initial-cluster-token=tok",
        "--initial-cluster-state=new",
    ]
    assert member_args("m1", Path("/d"), "u", "p", "c")[-1] == "--initial-cluster=c"
    assert RAFTKV[1:] == ["-m", "raftkv_cmd.main", "serve"]
