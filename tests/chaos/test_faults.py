"""Fault plumbing without a cluster: nemesis specs, packet-filter cuts, private networks, histories on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chaos.history import FAIL, INFO, NEMESIS, OK, Recorder, nemesis_windows, pair, read_jsonl, write_jsonl
from chaos.nemesis import NemesisError, parse
from chaos.netfault import Partitioner
from chaos.netns import PrivateNetwork


def test_nemesis_specs() -> None:
    assert parse("kill,partition:bridge") == [("kill", None), ("partition", "bridge")]
    assert parse("none") == []
    assert parse("member:wipe,member") == [("member", "wipe"), ("member", None)]
    with pytest.raises(NemesisError, match="unknown mode"):
        parse("member:grow")
    with pytest.raises(NemesisError, match="unknown mode"):
        parse("pause:all-at-once")
    with pytest.raises(NemesisError, match="unknown nemesis"):
        parse("meteor")


def test_history_round_trip_and_pairing(tmp_path: Path) -> None:
    rec = Recorder()
    a = rec.invoke(0, "write", {"key": "x", "value": "1"})
    b = rec.invoke(1, "read", {"key": "x"})
    rec.ok(a)
    rec.invoke(NEMESIS, "start", {"id": 1, "desc": "partition"})
    rec.fail(b, error="UNAVAILABLE")
    c = rec.invoke(2, "write", {"key": "x", "value": "2"})
    rec.info(c, error="timeout")
    rec.invoke(3, "read", {"key": "x"})  # never completes
    rec.invoke(NEMESIS, "stop", {"id": 1, "desc": "partition"})
    assert rec.count() == {OK: 1, FAIL: 1, INFO: 1}
    write_jsonl(rec.events, tmp_path / "h.jsonl")
    events = read_jsonl(tmp_path / "h.jsonl")
    assert [e.to_json() for e in events] == [e.to_json() for e in rec.events]
    ops = pair(events)
    assert [(o.f, o.type) for o in ops] == [("write", OK), ("read", FAIL), ("write", INFO), ("read", INFO)]
    assert ops[0].ret is not None and ops[2].ret is None and ops[3].ret is None
    assert ops[1].error == "UNAVAILABLE"
    windows = nemesis_windows(events, rec.now())
    assert len(windows) == 1 and windows[0][2] == "partition"


def test_a_process_has_one_operation_at_a_time() -> None:
    rec = Recorder()
    rec.invoke(0, "read", None)
    rec.invoke(0, "read", None)
    with pytest.raises(ValueError, match="still open"):
        pair(rec.events)


def _table(prefix: list[str], name: str) -> str:
    out = subprocess.run([*prefix, "nft", "list", "table", "inet", name], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else ""


def test_partitioner_cuts_pairs_and_heals() -> None:
    p = Partitioner([1], table="raftkv_chaos_test_cut")
    try:
        p.cut([("127.0.0.251", "127.0.0.252")])
        rules = _table([], p.table)
        assert "ip saddr 127.0.0.251 ip daddr 127.0.0.252 tcp dport 1 drop" in rules
        assert "ip saddr 127.0.0.252 ip daddr 127.0.0.251 tcp sport 1 drop" in rules
        assert "127.0.0.253" not in rules
        p.partition([["127.0.0.251"], ["127.0.0.252", "127.0.0.253"]])
        rules = _table([], p.table)
        assert rules.count("drop") == 8 and "127.0.0.253" in rules
    finally:
        p.heal()
    assert _table([], p.table) == ""


ACCEPT_ONE = """
import socket, sys
s = socket.create_server((sys.argv[1], 2380))
print("listening", flush=True)
s.accept()
"""
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 2380), timeout=5)"


def test_private_network_comes_and_goes() -> None:
    net = PrivateNetwork(2, tag="rkctest")
    try:
        net.up()
        assert net.hosts[0].endswith(".1") and net.hosts[1].endswith(".2")
        # member 1 reaches member 2 across the bridge (a TCP connection, no ping needed)
        server = subprocess.Popen(
            [*net.exec_prefix(1), sys.executable, "-c", ACCEPT_ONE, net.hosts[1]], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        client = subprocess.run(
            [*net.exec_prefix(0), sys.executable, "-c", CONNECT, net.hosts[1]],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert client.returncode == 0, client.stderr
        assert server.wait(10) == 0
        p = Partitioner([2380], table="raftkv_chaos_test_ns", namespaces=net.namespaces)
        p.partition([[net.hosts[0]], [net.hosts[1]]])
        assert "drop" in _table(net.exec_prefix(1), p.table)
        p.heal()
        assert _table(net.exec_prefix(1), p.table) == ""
    finally:
        net.down()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "rkctest" not in listed
