"""Leases on a real single member, raftkv and etcd 3.4.23 side by side (etcd is the oracle).

- etcdctl ``lease grant``, ``put --lease``, ``lease timetolive [--keys]``, ``lease keep-alive
  --once``, ``lease list``, ``lease revoke`` and their errors print exactly what etcd prints, after
  replacing lease ids (which each server picks) and the header fields of JSON output.
- keys vanish after their TTL once keep-alives stop, and never before (how soon after is the unit
  tests' business, on a fake clock: test_lessor.py and test_runner.py; here only that they do).
- leases and their keys survive a restart.
- ``etcdctl lock`` and ``etcdctl elect``: two contenders, the holder is killed, the other takes over.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import ETCD, ETCDCTL, EtcdMember, Process, RaftkvMember, etcdctl, track

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

# Seconds after a lease's deadline by which its keys must be gone. etcd checks every 0.5 s, but the
# revoke still goes through the log, on a machine that may be busy: this bounds "never", not "soon".
MARGIN = 10.0


@pytest.fixture
def pair(tmp_path) -> Iterator[tuple[RaftkvMember, EtcdMember]]:
    if ETCD is None or ETCDCTL is None:
        pytest.fail("etcd-server and etcd-client must be installed (scripts/test installs them)")
    ours = RaftkvMember("m1", tmp_path / "m1.etcd")
    ref = EtcdMember("ref", tmp_path / "ref.etcd")
    ours.start(wait=False)
    ref.start(wait=False)
    try:
        ours.wait_ready()
        ref.wait_ready()
        yield ours, ref
    finally:
        ours.stop()
        ref.stop()


# ---- etcdctl output, side by side ----


class Ids:
    """Replaces each lease id (hex in text, decimal in JSON) by <L1>, <L2>, ... in order of appearance."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def name(self, lease_id: int) -> str:
        return self.names.setdefault(lease_id, f"<L{len(self.names) + 1}>")

    def hex(self, lease_id: int) -> str:
        return format(lease_id, "x")

    def normalize(self, text: str) -> str:
        for lease_id, name in sorted(self.names.items(), key=lambda kv: -len(self.hex(kv[0]))):
            text = re.sub(rf"(?<![0-9a-f])0*{self.hex(lease_id)}(?![0-9a-f])", name, text)
            text = re.sub(rf'":{lease_id}(?!\d)', f'":"{name}"', text)  # decimal, in JSON
        # etcd lists a lease's keys in Go's map order, which varies from run to run: compare them sorted
        text = re.sub(
            r"attached keys\(\[([^\]]*)\]\)", lambda m: f"attached keys([{' '.join(sorted(m[1].split()))}])", text
        )
        text = re.sub(r'"keys":\[([^\]]*)\]', lambda m: '"keys":[' + ",".join(sorted(m[1].split(","))) + "]", text)
        # timing: a lease granted with TTL 100 has 99 whole seconds left a moment later, fewer on a slow machine
        text = re.sub(r"remaining\([5-9]\ds\)", "remaining(<99s>)", text)
        text = re.sub(r'"ttl":[5-9]\d,"granted-ttl":100', '"ttl":"<99>","granted-ttl":100', text)
        text = re.sub(r'^(\{"level":"warn","ts":)"[^"]+"', r'\1"<ts>"', text, flags=re.M)
        text = re.sub(r'("target":"endpoint://client-)[0-9a-f-]{36}/[^"]*"', r'\1<client>"', text)
        return re.sub(r'"(cluster_id|member_id|raft_term)":\d+', r'"\1":"<\1>"', text)


def run_script(server: Process) -> list[tuple[str, int, str, str]]:
    ids = Ids()
    out: list[tuple[str, int, str, str]] = []

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        r = etcdctl(server.endpoint, *args)
        for m in re.finditer(r"lease ([0-9a-f]+) granted", r.stdout):
            ids.name(int(m.group(1), 16))
        out.append((ids.normalize(" ".join(args)), r.returncode, ids.normalize(r.stdout), ids.normalize(r.stderr)))
        return r

    lease = ctl("lease", "grant", "100").stdout.split()[1]
    other = ctl("lease", "grant", "200").stdout.split()[1]
    ctl("put", "--lease", lease, "foo", "bar")
    ctl("put", "--lease", lease, "foo2", "bar")
    ctl("put", "--lease", other, "s", "1")
    ctl("put", "plain", "x")
    ctl("get", "foo", "-w", "json")
    ctl("lease", "timetolive", lease)
    ctl("lease", "timetolive", "--keys", lease)
    ctl("lease", "timetolive", "--keys", lease, "-w", "json")
    ctl("lease", "keep-alive", "--once", lease)
    ctl("lease", "list")
    ctl("lease", "revoke", other)
    ctl("get", "s")
    ctl("lease", "revoke", lease)
    ctl("get", "", "--prefix", "--keys-only")
    ctl("lease", "revoke", lease)
    ctl("lease", "timetolive", lease)
    ctl("lease", "timetolive", "--keys", lease, "-w", "json")
    ctl("lease", "keep-alive", "--once", lease)
    ctl("lease", "keep-alive", "--once", "1234")
    ctl("lease", "timetolive", "1234")
    ctl("put", "--lease", "1234", "a", "b")
    ctl("lease", "grant", "9000000001")
    ctl("lease", "grant", "9000000000")
    ctl("lease", "list")
    ctl("get", "", "--prefix", "-w", "json", "--keys-only", "--rev", "0")
    # raised to etcd's minimum TTL (2 s); last, because it expires 2 s later, and a slow run would
    # otherwise see it gone (or not) in the answers that follow
    ctl("lease", "grant", "1")
    return out


def test_etcdctl_lease_commands_print_what_etcd_prints(pair):
    ours, ref = pair
    got = run_script(ours)
    want = run_script(ref)
    mismatches = [
        f"$ etcdctl {g[0]}\n  etcd:   rc={w[1]} out={w[2]!r} err={w[3]!r}\n"
        f"  raftkv: rc={g[1]} out={g[2]!r} err={g[3]!r}"
        for g, w in zip(got, want, strict=True)
        if g != w
    ]
    assert not mismatches, "\n".join(mismatches)


# ---- expiry ----


def keep_alive_for(endpoint: str, lease_id: int, seconds: float, every: float) -> float:
    """Renews on one stream every `every` seconds for `seconds`; returns when the last renewal was sent."""
    requests: queue.Queue[pb.LeaseKeepAliveRequest | None] = queue.Queue()
    last_sent = 0.0
    with grpc.insecure_channel(endpoint) as ch:
        responses = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(iter(requests.get, None), timeout=seconds + 30)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            last_sent = time.monotonic()
            requests.put(pb.LeaseKeepAliveRequest(ID=lease_id))
            resp = next(responses)
            assert resp.TTL > 0, resp
            assert lease_id == resp.ID  # (ID is a field, not a constant)
            time.sleep(every)
        requests.put(None)
        for _ in responses:
            pass
    return last_sent


def watch_until_gone(endpoint: str, keys: list[bytes], deadline: float) -> float:
    """Polls until every key is gone; returns when it was first seen gone; fails at deadline."""
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        while True:
            now = time.monotonic()
            present = [k for k in keys if kv.Range(pb.RangeRequest(key=k), timeout=30).count]
            if not present:
                return now
            if now > deadline:
                raise AssertionError(f"keys {present} still there {now - deadline:.2f}s after their deadline+margin")
            time.sleep(0.05)


@pytest.mark.parametrize("name", ["raftkv", "etcd"])
def test_keys_vanish_after_ttl_once_keepalives_stop_never_before(pair, name):
    server = pair[0] if name == "raftkv" else pair[1]
    keys = [b"ttl/a", b"ttl/b", b"ttl/c"]
    with grpc.insecure_channel(server.endpoint) as ch:
        granted = time.monotonic()
        lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(TTL=4), timeout=30)
        assert lease.TTL == 4
        for k in keys:
            rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=k, value=b"v", lease=lease.ID), timeout=30)
    # renewed every 0.5 s for 2 s more than the TTL, so without the renewals the keys would be gone; a
    # TTL of 4 s (not 2) lets the renewals fall 3.5 s behind on a busy machine before the lease is lost
    last = keep_alive_for(server.endpoint, lease.ID, lease.TTL + 2.0, 0.5)
    assert time.monotonic() - granted > lease.TTL + 1
    gone = watch_until_gone(server.endpoint, keys, last + lease.TTL + MARGIN)
    assert gone >= last + lease.TTL - 0.05, f"keys vanished {last + lease.TTL - gone:.2f}s early"


def test_unrenewed_lease_expires_on_time(pair):
    ours, _ = pair
    with grpc.insecure_channel(ours.endpoint) as ch:
        t0 = time.monotonic()
        lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(TTL=3), timeout=30)
        rpc_pb2_grpc.KVStub(ch).Put(pb.PutRequest(key=b"x", value=b"v", lease=lease.ID), timeout=30)
        gone = watch_until_gone(ours.endpoint, [b"x"], t0 + 3 + MARGIN + 0.5)
        assert gone >= t0 + 3 - 0.05
        resp = rpc_pb2_grpc.LeaseStub(ch).LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease.ID), timeout=30)
        assert resp.TTL == -1


def test_leases_survive_restart(pair):
    ours, _ = pair
    out = etcdctl(ours.endpoint, "lease", "grant", "60", check=True).stdout
    lease = out.split()[1]
    etcdctl(ours.endpoint, "put", "--lease", lease, "kept", "1", check=True)
    ours.stop()
    ours.start()
    out = etcdctl(ours.endpoint, "lease", "timetolive", "--keys", lease, check=True).stdout
    assert re.fullmatch(
        rf"lease {lease} granted with TTL\(60s\), remaining\(([3-5]\d|60)s\), attached keys\(\[kept\]\)\n", out
    )
    assert etcdctl(ours.endpoint, "lease", "list", check=True).stdout == f"found 1 leases\n{lease}\n"


# ---- lock and elect ----


class Etcdctl:
    """A long-running etcdctl (lock, elect) whose stdout lines are read by one thread into a queue."""

    def __init__(self, endpoint: str, *args: str) -> None:
        assert ETCDCTL is not None
        self.proc = track(
            subprocess.Popen(
                [ETCDCTL, f"--endpoints={endpoint}", "--dial-timeout=10s", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
            )
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float) -> str:
        """The next stdout line; AssertionError if none comes within timeout."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output after {timeout}s") from None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("name", ["raftkv", "etcd"])
def test_lock_passes_to_the_waiter_when_the_holder_dies(pair, name):
    server = pair[0] if name == "raftkv" else pair[1]
    # the session's lease: 4 s, so that a busy machine delaying etcdctl's keep-alives (every TTL/3)
    # cannot let it expire while the holder is alive
    holder = Etcdctl(server.endpoint, "lock", "--ttl=4", "mylock")
    waiter = None
    try:
        held = holder.line(30)
        assert held.startswith("mylock/")
        waiter = Etcdctl(server.endpoint, "lock", "--ttl=4", "mylock")
        with pytest.raises(AssertionError, match="no output"):
            waiter.line(1.5)  # the lock is taken
        killed = time.monotonic()
        holder.kill()  # no unlock: only the lease's expiry frees the lock
        took_over = waiter.line(4 + MARGIN + 20)
        assert took_over.startswith("mylock/")
        assert took_over != held
        assert time.monotonic() - killed > 0.5  # by expiry, not at once
    finally:
        holder.stop()
        if waiter is not None:
            waiter.stop()


@pytest.mark.parametrize("name", ["raftkv", "etcd"])
def test_elect_passes_to_the_other_candidate_when_the_leader_dies(pair, name):
    server = pair[0] if name == "raftkv" else pair[1]
    alice = Etcdctl(server.endpoint, "elect", "myelection", "alice")
    bob = None
    try:
        key = alice.line(30)
        assert key.startswith("myelection/")
        assert alice.line(30) == "alice"
        bob = Etcdctl(server.endpoint, "elect", "myelection", "bob")
        with pytest.raises(AssertionError, match="no output"):
            bob.line(1.5)
        alice.kill()
        # elect's session TTL is 60 s: revoke alice's lease as its expiry would
        kvs = json.loads(etcdctl(server.endpoint, "get", key, "-w", "json", check=True).stdout)["kvs"]
        etcdctl(server.endpoint, "lease", "revoke", format(kvs[0]["lease"], "x"), check=True)
        assert bob.line(30).startswith("myelection/")
        assert bob.line(30) == "bob"
    finally:
        alice.stop()
        if bob is not None:
            bob.stop()


# ---- load ----


def test_ten_thousand_leases_with_keepalives_leave_the_server_responsive(pair):
    # Long enough that no lease can expire before its first renewal however slowly 10,000 are granted
    # and renewed (with TTL 30 a busy machine made that a race): an answer with TTL 0 is a lost lease.
    ttl = 600
    ours, _ = pair
    with grpc.insecure_channel(ours.endpoint) as ch:
        lease_stub, kv_stub = rpc_pb2_grpc.LeaseStub(ch), rpc_pb2_grpc.KVStub(ch)
        ids: list[int] = []
        for _ in range(0, 10_000, 500):
            futures = [lease_stub.LeaseGrant.future(pb.LeaseGrantRequest(TTL=ttl), timeout=60) for _ in range(500)]
            ids.extend(f.result().ID for f in futures)
        assert len(set(ids)) == 10_000
        stop = threading.Event()
        renewed = [0] * 8
        expired: list[int] = []

        def renew_all(n: int) -> None:
            mine = ids[n::8]
            requests: queue.Queue[pb.LeaseKeepAliveRequest | None] = queue.Queue()
            responses = lease_stub.LeaseKeepAlive(iter(requests.get, None), timeout=900)
            while not stop.is_set():
                for lease_id in mine[:100]:
                    requests.put(pb.LeaseKeepAliveRequest(ID=lease_id))
                for _ in range(100):
                    resp = next(responses)
                    if resp.TTL <= 0:
                        expired.append(resp.ID)
                    renewed[n] += 1
                mine = mine[100:] + mine[:100]
            requests.put(None)
            for _ in responses:
                pass

        threads = [threading.Thread(target=renew_all, args=(n,), daemon=True) for n in range(8)]
        for t in threads:
            t.start()
        # responsive: while every lease is being renewed, plain requests keep succeeding (within
        # etcd's request timeout; how fast is measured in bench/lease.py, not asserted here). The
        # deadline bounds a hang: a slow machine takes longer to renew them all, it does not fail.
        probes = 0
        deadline = time.monotonic() + 600
        while sum(renewed) < 10_000 and time.monotonic() < deadline:
            kv_stub.Put(pb.PutRequest(key=b"probe", value=b"%d" % probes), timeout=7)
            assert kv_stub.Range(pb.RangeRequest(key=b"probe"), timeout=7).kvs[0].value == b"%d" % probes
            probes += 1
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(30)
    assert expired == []
    assert sum(renewed) >= 10_000, renewed  # every lease renewed at least once, on average
    assert probes > 0
