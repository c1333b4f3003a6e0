"""Watch end to end over real member processes: etcdctl side by side with real etcd, and a leader kill.

These tests need the Watch service wired into the member (``member.watch_hub``, the applier's
``on_changes``, ``WatchService`` on the gRPC server); until then the first Watch call gets
UNIMPLEMENTED and every test here fails with a message saying so. They are expected to pass once
it is wired.

- ``etcdctl watch`` (``--prefix``, ``--prev-kv``, ``--rev`` for history, a compacted ``--rev``,
  and interactive ``watch -i`` with ``progress``) prints the same thing against raftkv as against
  etcd 3.4 for the same sequence of writes (the servers' ids are never printed).
- Across a leader kill in a three-member cluster, watchers on every member, resuming on another
  member from the revision after the last one they saw whenever their stream breaks, together see
  the store's history exactly: ordered, unique, atomic (a multi-key txn arrives whole), reliable
  (replaying the events gives the final keyspace), resumable, and bookmarked by progress responses.
  Then, left alone, the last member ends ``hasleader`` streams with ``etcdserver: no leader``.
- A member that installs a snapshot from the leader while a client watches it keeps that stream,
  and the client still gets every revision, once (the hub is reset to the new store).
- ``bench.watch`` runs against both servers, single members and three-member clusters.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from chaos.cluster import LocalCluster
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import ETCDCTL, REPO, EtcdMember, RaftkvMember, etcdctl, free_port, track, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.etcd]


def require_watch(endpoint: str) -> None:
    """Fails (not skips) with a clear message when the member does not serve Watch yet."""
    with grpc.insecure_channel(endpoint) as ch:
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"require-watch"))
        call = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]))
        try:
            next(call)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        finally:
            call.cancel()
    pytest.fail("the Watch service is not wired into the member yet (see kvstore/watch/__init__.py)")


class Watching:
    """A background ``etcdctl watch`` whose output is collected."""

    def __init__(self, endpoint: str, *args: str, stdin: bool = False) -> None:
        assert ETCDCTL is not None
        self.proc = track(
            subprocess.Popen(
                [ETCDCTL, f"--endpoints={endpoint}", "--dial-timeout=10s", "watch", *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "ETCDCTL_API": "3"},
            )
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, pipe: object, into: list[str], notify: bool) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))
            if notify:
                self.lines.put(line.rstrip("\n"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Waits until a line equal to text is printed."""
        self._wait(lambda: text in self.out, repr(text), timeout)

    def wait_lines(self, count: int, timeout: float = 60.0) -> None:
        """Waits until count lines are printed (the whole answer, not just its first line)."""
        self._wait(lambda: len(self.out) >= count, f"{count} lines", timeout)

    def _wait(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            try:
                self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{what} never printed; got {self.out} / {self.err}") from None

    def stop(self) -> tuple[list[str], list[str]]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(30)
        return self.out, [line for line in self.err if not line.startswith("{")]  # not etcdctl's JSON logs


TXN = "\nput p/c 4\nput p/d 5\n\n\n"  # no compares; two puts on success; nothing on failure


def etcdctl_session(endpoint: str) -> dict[str, object]:
    """The same writes and watches against one server; returns everything etcdctl printed."""
    require_watch(endpoint)
    ok = lambda *a, stdin=None: etcdctl(endpoint, *a, stdin=stdin, check=True)  # noqa: E731
    ok("put", "p/before", "0")  # revision 2: history for --rev
    # The live watchers start at revision 3, the first write below: etcdctl never says when its watch
    # is established, so a watch "from now" might start after the first writes on a busy machine.
    # From revision 3 it prints the same, whenever it is established.
    prefix = Watching(endpoint, "--rev", "3", "--prefix", "p")
    prev = Watching(endpoint, "--rev", "3", "--prefix", "--prev-kv", "p/")
    single = Watching(endpoint, "--rev", "3", "p/a")
    interactive = Watching(endpoint, "-i", stdin=True)
    interactive.send("watch --rev 3 --prefix p/ --prev-kv")
    ok("put", "p/a", "1")
    ok("put", "p/b", "2")
    ok("put", "p/a", "3")
    ok("put", "q/x", "outside")
    ok("del", "p/a")
    ok("txn", stdin=TXN)
    ok("del", "p/", "--prefix")
    ok("put", "p/e", "")
    lease = ok("lease", "grant", "100").stdout.split()[1]  # "lease <id> granted with TTL(100s)"
    ok("put", "p/l", "leased", f"--lease={lease}")
    ok("lease", "revoke", lease)  # the leased key's deletion is an event like any other
    ok("put", "p/zz", "end")
    for w in (prefix, prev, interactive):
        w.wait_for("end")
    single.wait_lines(9)  # PUT p/a 1, PUT p/a 3, DELETE p/a (and an empty value)
    interactive.send("progress")
    interactive.wait_for("progress notify: 13")
    out: dict[str, object] = {}
    for name, w in (("prefix", prefix), ("prev", prev), ("single", single), ("interactive", interactive)):
        out[name] = w.stop()
    history = Watching(endpoint, "--rev", "2", "--prefix", "p/")
    history.wait_for("end")
    out["history"] = history.stop()
    history_prev = Watching(endpoint, "--rev", "5", "--prev-kv", "p/a")
    history_prev.wait_lines(10)  # PUT p/a 1 p/a 3 (rev 5, with its prev), DELETE p/a 3 p/a "" (rev 7)
    out["history_prev"] = history_prev.stop()
    ok("compact", "6")
    compacted = Watching(endpoint, "--rev", "3", "--prefix", "p/")
    compacted.proc.wait(60)
    out["compacted"] = compacted.stop(), compacted.proc.returncode
    future = Watching(endpoint, "-i", stdin=True)
    future.send("watch p/ --prefix --rev 40")
    # no pause: etcdctl sends the progress request on the same stream after the create, and the
    # server answers in order, so the watcher exists when the progress notification arrives
    future.send("progress")
    future.wait_for("progress notify: 13")
    out["future"] = future.stop()
    return out


def test_etcdctl_watch_prints_what_etcd_prints(raftkv: RaftkvMember, etcd: EtcdMember) -> None:
    got = etcdctl_session(raftkv.endpoint)
    want = etcdctl_session(etcd.endpoint)
    for name in want:
        assert got[name] == want[name], name
    # and the reference behaved as the scenario intends
    prefix_out, _ = want["prefix"]  # type: ignore[misc]
    assert prefix_out[:3] == ["PUT", "p/a", "1"] and "outside" not in prefix_out
    (_, compacted_err), code = want["compacted"]  # type: ignore[misc]
    assert "watch was canceled (etcdserver: mvcc: required revision has been compacted)" in compacted_err
    assert code != 0


# ---- the six guarantees across a leader kill ----


class Follower(threading.Thread):
    """A client that watches every key from a revision on, hopping to another member when its stream breaks."""

    def __init__(self, endpoints: list[str], first: int, start: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.turn = first
        self.next_rev = start
        self.stop_flag = stop
        self.events: list[tuple[int, int, bytes, bytes]] = []  # (revision, type, key, value)
        self.responses: list[list[tuple[int, int, bytes, bytes]]] = []
        self.bookmarks: list[tuple[int, int]] = []  # (progress revision, events received before it)
        self.resumes = 0
        self.errors: list[str] = []
        self.call: grpc.Future | None = None

    def _requests(self, start: int) -> Iterator[pb.WatchRequest]:
        yield pb.WatchRequest(
            create_request=pb.WatchCreateRequest(key=b"\x00", range_end=b"\x00", start_revision=start)
        )
        while not self.stop_flag.wait(0.3):
            yield pb.WatchRequest(progress_request=pb.WatchProgressRequest())

    def close(self) -> None:
        self.stop_flag.set()
        if self.call is not None:
            self.call.cancel()
        self.join(10)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            endpoint = self.endpoints[self.turn % len(self.endpoints)]
            try:
                with grpc.insecure_channel(endpoint) as ch:
                    self.call = call = rpc_pb2_grpc.WatchStub(ch).Watch(
                        self._requests(self.next_rev), metadata=(("hasleader", "true"),)
                    )
                    for resp in call:
                        if resp.compact_revision:
                            self.errors.append(f"compacted at {resp.compact_revision}")
                            return
                        if resp.canceled or resp.created:
                            continue
                        if not resp.events:
                            self.bookmarks.append((resp.header.revision, len(self.events)))
                            continue
                        evs = [(e.kv.mod_revision, e.type, e.kv.key, e.kv.value) for e in resp.events]
                        self.events += evs
                        self.responses.append(evs)
                        self.next_rev = evs[-1][0] + 1
            except grpc.RpcError as exc:
                if not self.stop_flag.is_set():
                    self.errors.append(f"{endpoint}: {exc.code()} {exc.details()}")
            if self.stop_flag.is_set():
                return
            self.turn += 1  # resume on the next member, from the revision after the last one seen
            self.resumes += 1
            time.sleep(0.2)


def test_watchers_see_the_history_exactly_across_a_leader_kill(tmp_path: Path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    cluster = LocalCluster(tmp_path / "cluster", size=3, ports=ports)
    cluster.start(timeout=60)
    try:
        endpoints = [m.endpoint for m in cluster.members]
        require_watch(endpoints[0])
        stop = threading.Event()
        followers = [Follower(endpoints, i, 1, stop) for i in range(3)]
        for f in followers:
            f.start()
        acked: list[tuple[int, dict[bytes, bytes]]] = []
        writer_stop = threading.Event()

        def write(n: int) -> None:
            i = 0
            while not writer_stop.is_set():
                i += 1
                keys = [b"k/%d/%d" % (n, (i + j) % 5) for j in range(3)]
                ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"%d" % i)) for k in keys]
                for endpoint in endpoints[n:] + endpoints[:n]:
                    try:
                        with grpc.insecure_channel(endpoint) as ch:
                            resp = rpc_pb2_grpc.KVStub(ch).Txn(pb.TxnRequest(success=ops), timeout=3)
                        acked.append((resp.header.revision, {k: b"%d" % i for k in keys}))
                        break
                    except grpc.RpcError:
                        time.sleep(0.1)

        writers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(2)]
        for w in writers:
            w.start()
        wait_for("txns acknowledged before the kill", lambda: len(acked) >= 20)
        lead = cluster.wait_ready()
        leader = next(m for m in cluster.members if status(m.endpoint).header.member_id == lead)
        cluster.kill_member(leader.name)
        at_kill = len(acked)
        wait_for("txns acknowledged after the kill", lambda: len(acked) >= at_kill + 20, timeout=120)
        writer_stop.set()
        for w in writers:
            w.join(60)
            assert not w.is_alive()
        survivors = [m.endpoint for m in cluster.members if m.running()]
        final = dump(survivors[0])
        final_rev = final["rev"]
        assert final == dump(survivors[1], final_rev)
        wait_for(
            "every watcher to reach the final revision",
            lambda: all(f.events and f.events[-1][0] >= final_rev for f in followers),
            timeout=120,
        )
        for f in followers:
            f.close()
        reference = followers[0].events
        for f in followers:
            assert not [e for e in f.errors if "compacted" in e]
            events = [e for e in f.events if e[0] <= final_rev]
            # ordered and unique
            revs = [rev for rev, _, _, _ in events]
            assert revs == sorted(revs), "out of order"
            assert len({(rev, key) for rev, _, key, _ in events}) == len(events), "duplicated"
            # every follower saw the same history
            assert events == [e for e in reference if e[0] <= final_rev]
            # atomic: each txn revision arrived whole in one response
            for resp in f.responses:
                for rev in {e[0] for e in resp}:
                    assert len([e for e in resp if e[0] == rev]) == 3
            # bookmarks: nothing arrived after a progress response that it vouched for
            for rev, count in f.bookmarks:
                assert all(e[0] > rev for e in f.events[count:])
        # reliable: replaying the events gives the keyspace, and every acknowledged txn is there
        state: dict[bytes, bytes] = {}
        for rev, kind, key, value in reference:
            if rev > final_rev:  # a txn a client gave up on may still commit after the dump
                break
            if kind == 0:
                state[key] = value
            else:
                state.pop(key, None)
        assert state == final["kvs"]
        by_rev = {}
        for rev, _, key, value in reference:
            by_rev.setdefault(rev, {})[key] = value
        for rev, kvs in acked:
            assert by_rev[rev] == kvs
        assert any(f.resumes for f in followers)  # someone lost its member and resumed elsewhere
        # and when the last two lose each other, hasleader streams end with "no leader"; others stay
        lone, other = [m for m in cluster.members if m.running()]
        hasleader_is_canceled_without_a_leader(cluster, lone.endpoint, other.name)
    finally:
        cluster.stop()


def hasleader_is_canceled_without_a_leader(cluster: LocalCluster, endpoint: str, kill: str) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k"))
        guarded = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]), metadata=(("hasleader", "true"),), timeout=120)
        plain = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]))
        assert next(guarded).created and next(plain).created
        t0 = time.monotonic()
        cluster.kill_member(kill)
        with pytest.raises(grpc.RpcError) as exc:
            next(guarded)
        waited = time.monotonic() - t0
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value
        assert exc.value.details() == "etcdserver: no leader"
        # three election timeouts (1 s) after the leader is lost, not at once (how long after is the
        # unit test's business; the call's deadline bounds it here)
        assert waited >= 2.0
        refused = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]), metadata=(("hasleader", "true"),))
        with pytest.raises(grpc.RpcError) as exc:
            next(refused)
        assert exc.value.details() == "etcdserver: no leader"
        plain.cancel()


def status(endpoint: str) -> pb.StatusResponse:
    with grpc.insecure_channel(endpoint) as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=5)


def dump(endpoint: str, rev: int = 0) -> dict:
    with grpc.insecure_channel(endpoint) as ch:
        request = pb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev)
        resp = rpc_pb2_grpc.KVStub(ch).Range(request, timeout=30)
    return {"rev": resp.header.revision, "kvs": {kv.key: kv.value for kv in resp.kvs}}


def test_a_watch_on_a_member_that_installs_a_snapshot_misses_nothing(tmp_path: Path) -> None:
    """The member's hub is reset to the snapshot's store; its watchers resync from it on the same stream."""
    ports = [(free_port(), free_port()) for _ in range(3)]
    cluster = LocalCluster(tmp_path / "cluster", size=3, ports=ports, extra_args=["--snapshot-count=200"])
    cluster.start(timeout=60)
    try:
        lead = cluster.wait_ready()
        lagging = next(m for m in cluster.members if status(m.endpoint).header.member_id != lead)
        leader = next(m for m in cluster.members if status(m.endpoint).header.member_id == lead)
        require_watch(lagging.endpoint)
        start = dump(leader.endpoint)["rev"] + 1
        stop = threading.Event()
        follower = Follower([lagging.endpoint], 0, start, stop)
        follower.start()
        with grpc.insecure_channel(leader.endpoint) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            stub.Put(pb.PutRequest(key=b"snap/first", value=b"1"), timeout=10)
            wait_for("the first event", lambda: follower.events or follower.errors)
            assert not follower.errors
            cluster.signal_member(lagging.name, signal.SIGSTOP)
            # beyond the 5000 entries a leader keeps after its snapshot, plus what it already sent the
            # paused member: at most 256 appends in flight, of at most 16 entries each with 16 writers
            for first in range(0, 10_000, 16):
                batch = [
                    stub.Put.future(pb.PutRequest(key=b"snap/%05d" % i, value=b"x" * 20), timeout=60)
                    for i in range(first, first + 16)
                ]
                for f in batch:
                    f.result()
            last = stub.Put(pb.PutRequest(key=b"snap/last", value=b"done"), timeout=30).header.revision
        # the paused member can only catch up by snapshot
        wait_for("the leader to compact its log", lambda: compacted_beyond(leader.log_path, 4500), interval=0.2)
        cluster.signal_member(lagging.name, signal.SIGCONT)
        wait_for("every event", lambda: follower.errors or (follower.events and follower.events[-1][0] >= last), 180)
        follower.close()
        installed = "installing snapshot from the leader"  # (the log is copied by a thread: poll it)
        wait_for("the snapshot install in its log", lambda: installed in lagging.log_path.read_text())
        assert follower.resumes == 0 and not follower.errors  # the same stream, across the install
        assert [e[0] for e in follower.events] == list(range(start, last + 1))
    finally:
        cluster.stop()


def compacted_beyond(log_path: Path, index: int) -> bool:
    for line in log_path.read_text(errors="replace").splitlines():
        if '"compacted the raft log"' in line:
            with contextlib.suppress(ValueError, KeyError):
                if json.loads(line)["kept_from"] > index:
                    return True
    return False


def test_bench_watch_runs_against_both_servers(tmp_path: Path) -> None:
    """bench.watch end to end, briefly: both servers, every workload, well-formed JSON. No timing is asserted."""
    args = ["--rounds", "5", "--warmup-rounds", "1", "--fanout", "1,20", "--streams", "3"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.watch", *args, "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [path] = tmp_path.glob("watch-*.json")
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "watch"
    assert {(r["workload"], r["server"]) for r in doc["results"]} == {
        (w, s) for w in ("latency", "fanout-1", "fanout-20") for s in ("raftkv", "etcd")
    }
    assert set(doc["ratios"]) == {"latency", "fanout-1", "fanout-20"}
    assert "raftkv/etcd" in out.stdout


def test_bench_watch_runs_three_member_clusters(tmp_path: Path) -> None:
    """bench.watch --members 3, briefly: streams over every member, CPU per member. No timing is asserted."""
    args = ["--members", "3", "--rounds", "4", "--warmup-rounds", "1", "--fanout", "12", "--streams", "3"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.watch", *args, "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [path] = tmp_path.glob("watch-3members-*.json")
    doc = json.loads(path.read_text())
    assert doc["config"]["members"] == 3
    assert [(r["workload"], r["server"]) for r in doc["results"]] == [
        (w, s) for w in ("latency", "fanout-12") for s in ("raftkv", "etcd")
    ]
    for r in doc["results"]:
        assert r["members"] == 3 and len(r["member_cpu_s"]) == 3, r
        assert r["rounds"] == 4 and r["events_per_s"] > 0, r
    assert "3-member clusters" in out.stdout
