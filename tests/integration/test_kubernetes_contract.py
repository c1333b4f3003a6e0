"""The storage contract Kubernetes relies on (KEP-4743), against real etcd 3.4.23 and raftkv side by side.

The requests are the control plane's own (``controlplane.store.kube``, what kube-apiserver sends):
Get, List (limit, revision, continue from the last key + ``\\0``, count), Count, OptimisticPut and
OptimisticDelete, Watch (prev_kv, range end, start revision, progress notify, RequestProgress,
``hasleader``), the health check Range, the compaction loop and the version check. Every answer
is recorded in a transcript (``tests.sidebyside``: revisions relative to the start) and the two
transcripts must be equal. Where raftkv follows etcd's fixed behaviour that 3.4.23 lacks
(RequestProgress before the watchers are synced, or on a stream with none), the difference is
asserted explicitly on each side.

WithRequireLeader and RequestProgress under a partition run on three-member clusters of each
(etcd's members in network namespaces, raftkv's on loopback addresses; nftables drops the peer
traffic of one follower).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from chaos.targets import LocalTarget
from controlplane.store import kube
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import EtcdMember, RaftkvMember
from tests.sidebyside import Transcript, assert_same

pytestmark = pytest.mark.integration
WAIT = 30.0


class Api(Transcript):
    """kube-apiserver's view of one server: the contract's client and a transcript."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch_stub = rpc_pb2_grpc.WatchStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.k = kube.KubernetesClient(self.kv)
        super().__init__(self.kv.Range(pb.RangeRequest(key=b"probe")).header.revision)

    def close(self) -> None:
        self.channel.close()

    def kvs(self, kvs: list[Any]) -> str:
        return "[" + ", ".join(self.text(kv) for kv in kvs) + "]"

    def get(self, what: str, key: bytes, revision: int = 0) -> kube.GetResponse | None:
        try:
            r = self.k.get(key, revision)
        except grpc.RpcError as err:
            self.error(what, err)
            return None
        self.note(what, f"kv={self.text(r.kv) if r.kv else None} revision={self.rel(r.revision)}")
        return r

    def list(self, what: str, prefix: bytes, **kw: Any) -> kube.ListResponse | None:
        try:
            r = self.k.list(prefix, **kw)
        except grpc.RpcError as err:
            self.error(what, err)
            return None
        self.note(what, f"kvs={self.kvs(r.kvs)} count={r.count} more={r.more} revision={self.rel(r.revision)}")
        return r

    def write(self, what: str, r: kube.WriteResponse) -> kube.WriteResponse:
        kv = self.text(r.kv) if r.kv else None
        self.note(what, f"succeeded={r.succeeded} revision={self.rel(r.revision)} kv={kv}")
        return r

    def create(self, key: bytes, value: bytes = b"v", lease: int = 0) -> kube.WriteResponse:
        r = self.k.optimistic_put(key, value, 0, lease=lease)
        assert r.succeeded, key
        return r

    def watch(self, *requests: pb.WatchRequest, leader: bool = True) -> Watch:
        return Watch(self, requests, leader)


class Watch:
    """A Watch stream read by a thread: ``send`` more requests, ``next`` waits for a response."""

    def __init__(self, api: Api, requests: tuple[pb.WatchRequest, ...], require_leader: bool) -> None:
        self.api = api
        self.out: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        for r in requests:
            self.out.put(r)
        self.q: queue.Queue[Any] = queue.Queue()
        self.call = api.watch_stub.Watch(self._requests(), metadata=kube.REQUIRE_LEADER if require_leader else ())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[pb.WatchRequest]:
        while (r := self.out.get()) is not None:
            yield r

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.q.put(resp)
            self.q.put("ended")
        except grpc.RpcError as err:
            self.q.put(err)

    def send(self, r: pb.WatchRequest) -> None:
        self.out.put(r)

    def next(self, timeout: float = WAIT) -> Any:
        return self.q.get(timeout=timeout)

    def record(self, what: str, timeout: float = WAIT) -> Any:
        item = self.next(timeout)
        if isinstance(item, grpc.RpcError):
            self.api.error(what, item)
        elif isinstance(item, str):
            self.api.note(what, item)
        else:
            self.api.note(what, self.api.text(item))
        return item

    def events(self, n: int) -> list[Any]:
        """The next n events, whatever responses they come in."""
        got: list[Any] = []
        while len(got) < n:
            item = self.next()
            assert isinstance(item, pb.WatchResponse), item
            got.extend(item.events)
        return got

    def close(self) -> None:
        self.out.put(None)
        self.call.cancel()
        self.thread.join(10)


def side_by_side(servers: dict[str, RaftkvMember | EtcdMember], scenario: Any) -> dict[str, list[str]]:
    logs = {}
    for name, member in servers.items():
        api = Api(member.endpoint)
        try:
            scenario(api)
        finally:
            api.close()
        logs[name] = api.log
    return logs


# ---- Get, List, Count ----


def test_get(servers) -> None:
    def scenario(a: Api) -> None:
        first = a.create(b"/registry/pods/get/a", b"v1")
        a.write("update", a.k.optimistic_put(b"/registry/pods/get/a", b"v2", first.revision))
        a.get("latest", b"/registry/pods/get/a")
        a.get("at the first revision", b"/registry/pods/get/a", first.revision)
        a.get("before it existed", b"/registry/pods/get/a", first.revision - 1)
        a.get("missing", b"/registry/pods/get/nope")
        a.get("a future revision", b"/registry/pods/get/a", first.revision + 1000)

    assert_same(side_by_side(servers, scenario))


def test_list_pages_continue_and_count(servers) -> None:
    def scenario(a: Api) -> None:
        prefix = b"/registry/pods/ns1/"
        for i in range(7):
            a.create(prefix + b"p%d" % i)
        a.create(b"/registry/pods/ns10/x")  # not under the prefix, though it starts with its bytes minus "/"
        a.create(b"/registry/pods/ns2/y")
        page = a.list("page 1", prefix, limit=3)
        assert page is not None
        rev = page.revision
        a.write("meanwhile, a delete", a.k.optimistic_delete(prefix + b"p0", page.kvs[0].mod_revision))
        a.create(prefix + b"p7")
        while page is not None and page.more:
            page = a.list("next page", prefix, limit=3, revision=rev, continue_key=page.next_key())
        a.list("everything now", prefix)
        a.list("everything at the first page's revision", prefix, revision=rev)
        a.note("count", str(a.k.count(prefix)))
        a.note("count of nothing", str(a.k.count(b"/registry/none/")))
        a.list("continue key past the range end", prefix, limit=3, continue_key=b"/registry/pods/ns2/")
        a.list("limit larger than the range", prefix, limit=100)

    assert_same(side_by_side(servers, scenario))


# ---- OptimisticPut, OptimisticDelete ----


def test_optimistic_put_and_delete(servers) -> None:
    def scenario(a: Api) -> None:
        key = b"/registry/deployments/default/web"
        k = a.k
        created = a.write("create", k.optimistic_put(key, b"v1", 0))
        a.write("create again", k.optimistic_put(key, b"v1", 0, get_on_failure=True))
        a.write("create again without get", k.optimistic_put(key, b"v1", 0))
        upd = a.write("update", k.optimistic_put(key, b"v2", created.revision, get_on_failure=True))
        a.write("stale update", k.optimistic_put(key, b"v3", created.revision, get_on_failure=True))
        a.write("update of a missing key", k.optimistic_put(key + b"x", b"v", 5, get_on_failure=True))
        a.write("stale delete", k.optimistic_delete(key, created.revision, get_on_failure=True))
        a.write("delete", k.optimistic_delete(key, upd.revision, get_on_failure=True))
        a.write("delete again", k.optimistic_delete(key, upd.revision, get_on_failure=True))
        a.write("delete of a missing key without get", k.optimistic_delete(key, 0))
        grant = rpc_pb2_grpc.LeaseStub(a.channel).LeaseGrant(pb.LeaseGrantRequest(ID=0x4B_0001, TTL=60))
        a.write("create with a lease", k.optimistic_put(key, b"event", 0, lease=grant.ID))
        a.get("leased", key)
        rpc_pb2_grpc.LeaseStub(a.channel).LeaseRevoke(pb.LeaseRevokeRequest(ID=grant.ID))
        a.get("gone with its lease", key)

    assert_same(side_by_side(servers, scenario))


# ---- Watch ----


def test_watch_prev_kv_range_end_start_revision(servers) -> None:
    def scenario(a: Api) -> None:
        prefix = b"/registry/configmaps/w/"
        start = a.create(prefix + b"a", b"1").revision
        a.create(b"/registry/configmaps/w2/outside")
        a.write("update a", a.k.optimistic_put(prefix + b"a", b"2", start))
        b = a.create(prefix + b"b", b"1")
        a.write("delete b", a.k.optimistic_delete(prefix + b"b", b.revision))
        w = a.watch(kube.watch_request(prefix, start))  # from the past: catches up
        w.record("created")
        for ev in w.events(4):
            a.note("event", a.text(ev))
        later = a.create(prefix + b"c", b"1")
        w.record("live")
        one = a.watch(kube.watch_request(prefix + b"c", later.revision, exact=True))
        one.record("exact key created")
        one.record("exact key event")
        a.write("update outside the prefix", a.k.optimistic_put(b"/registry/configmaps/w2/outside", b"2", 0))
        a.write("update c", a.k.optimistic_put(prefix + b"c", b"2", later.revision))
        w.record("only the prefix")
        one.record("only the key")
        w.close()
        one.close()

    assert_same(side_by_side(servers, scenario))


def test_request_progress_of_a_synced_watcher(servers) -> None:
    def scenario(a: Api) -> None:
        prefix = b"/registry/leases/p/"
        w = a.watch(kube.watch_request(prefix, 0))
        w.record("created")
        w.send(kube.PROGRESS_REQUEST)
        w.record("progress")
        a.create(prefix + b"x")
        a.create(b"/registry/other/y")  # moves the revision, no event for the watcher
        w.record("event")
        w.send(kube.PROGRESS_REQUEST)
        w.record("progress at the current revision")
        w.close()

    assert_same(side_by_side(servers, scenario))


def test_request_progress_waits_for_the_watcher_to_sync(servers) -> None:
    """kube-apiserver's consistent reads from cache take a progress notification at revision R to mean
    every event up to R was delivered. raftkv (like etcd ≥ 3.5.13) answers only once the watcher is
    synced; etcd 3.4.23 answers at once, which is why Kubernetes does not use it before 3.4.31."""
    prefix = b"/registry/secrets/sync/"
    for name, member in servers.items():
        a = Api(member.endpoint)
        try:
            first = a.create(prefix + b"k0").revision
            for i in range(1, 600):
                a.create(prefix + b"k%d" % i)
            w = a.watch(kube.watch_request(prefix, first), kube.PROGRESS_REQUEST)
            assert w.next().created
            seen = 0
            while True:
                r = w.next()
                if r.events:
                    seen = r.events[-1].kv.mod_revision
                    continue
                assert r.watch_id == -1  # the progress notification
                break
            if name == "raftkv":
                assert seen == first + 599 == r.header.revision, (seen, r.header.revision)
            else:
                assert r.header.revision >= first + 599  # 3.4.23: whatever it had sent (often nothing yet)
            w.close()
        finally:
            a.close()


def test_request_progress_on_a_stream_without_watchers(servers) -> None:
    """etcd 3.5 sends the answer on a watcher of the stream: with none, there is no answer. 3.4.23
    answered with watch id -1. Checked by the order of what a later watch creation gets."""
    for name, member in servers.items():
        a = Api(member.endpoint)
        try:
            w = a.watch(kube.PROGRESS_REQUEST, kube.watch_request(b"/registry/none/", 0))
            first = w.next()
            if name == "raftkv":
                assert first.created, first
            else:
                assert (first.watch_id, first.created) == (-1, False), first
                assert w.next().created
            w.close()
        finally:
            a.close()


# ---- health, compaction, version ----


def test_health_check(servers) -> None:
    def scenario(a: Api) -> None:
        a.call("health", lambda: a.kv.Range(kube.health_request(), timeout=5))

    assert_same(side_by_side(servers, scenario))


def test_compaction_loop(servers) -> None:
    """Two apiservers' compactors take turns on compact_rev_key; a third watches it to learn of
    compactions; reads below the compacted revision fail with etcd's error."""

    def scenario(a: Api) -> None:
        # the key may be there from an earlier module: start from its version
        got = a.k.get(kube.COMPACT_REV_KEY)
        version = got.kv.version if got.kv else 0
        one, two = kube.Compactor(version=version), kube.Compactor(version=version)
        w = a.watch(kube.watch_request(kube.COMPACT_REV_KEY, 0, exact=True))
        w.record("watching compact_rev_key")
        a.note("one bootstraps", str(one.step(a.kv, 0)))
        w.record("seen")
        a.note("two loses", f"{two.step(a.kv, 0)} version+{two.version - version}")
        old = a.create(b"/registry/events/e1")
        a.write("update", a.k.optimistic_put(b"/registry/events/e1", b"v2", old.revision))
        target = a.k.get(b"/registry/events/e1").revision
        a.note("two compacts", f"{two.step(a.kv, target)} {a.rel(two.compacted[-1])}")
        w.record("seen")
        a.note("one loses", f"{one.step(a.kv, target)} version+{one.version - version}")
        a.get("below the compaction", b"/registry/events/e1", old.revision)
        a.get("at the compaction", b"/registry/events/e1", target)
        a.list("list below the compaction", b"/registry/events/", revision=old.revision)
        w2 = a.watch(kube.watch_request(b"/registry/events/", old.revision))
        w2.record("created")
        w2.record("a watch from before the compaction")
        w.close()
        w2.close()

    assert_same(side_by_side(servers, scenario))


def test_status_version_kubernetes_accepts(servers) -> None:
    for name, member in servers.items():
        a = Api(member.endpoint)
        try:
            version = a.maintenance.Status(pb.StatusRequest(), timeout=5).version
        finally:
            a.close()
        if name == "raftkv":
            assert kube.supports_request_progress(version), version
        else:
            assert version == "3.4.23" and not kube.supports_request_progress(version)
    assert kube.supports_request_progress("3.5.13") and not kube.supports_request_progress("3.5.12")
    assert kube.supports_request_progress("3.4.31") and kube.supports_request_progress("3.6.0")


# ---- WithRequireLeader and RequestProgress under a partition (three members each) ----


def _leader_and_follower(target: LocalTarget) -> tuple[str, str]:
    deadline = time.monotonic() + 60
    while (leader := target.leader()) is None:
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.1)
    return leader, next(n for n in target.names if n != leader)


@pytest.mark.parametrize("kind", ["raftkv", "etcd"])
def test_require_leader_and_progress_under_a_partition(tmp_path: Path, kind: str, request) -> None:
    target = LocalTarget(tmp_path / kind, kind=kind, size=3)
    target.start()
    partitioner = target.partitioner()
    apis: list[Api] = []
    try:
        leader, isolated = _leader_and_follower(target)
        lead = Api(target.endpoint(leader))
        cut = Api(target.endpoint(isolated))
        apis += [lead, cut]
        prefix = b"/registry/pods/part/"
        watched = cut.watch(kube.watch_request(prefix, 0))  # with hasleader
        plain = cut.watch(kube.watch_request(prefix, 0), leader=False)
        assert watched.next().created and plain.next().created
        before = lead.create(prefix + b"a").revision
        assert [e.kv.mod_revision for e in watched.events(1)] == [before]
        assert [e.kv.mod_revision for e in plain.events(1)] == [before]

        partitioner.partition([[target.host(isolated)], [target.host(n) for n in target.names if n != isolated]])
        after = before
        deadline = time.monotonic() + WAIT
        while after == before:  # the majority goes on
            try:
                after = lead.k.optimistic_put(prefix + b"b", b"v", 0).revision
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the majority does not take writes"
                time.sleep(0.2)
        # the isolated member loses its leader: the hasleader watch is ended with etcd's error
        err = watched.next(timeout=60)
        assert isinstance(err, grpc.RpcError), err
        assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        # a new hasleader watch is refused at once; a plain one is served from the member's own state
        refused = cut.watch(kube.watch_request(prefix, 0))
        err = refused.next()
        assert isinstance(err, grpc.RpcError) and err.details() == "etcdserver: no leader", err
        plain.send(kube.PROGRESS_REQUEST)
        progress = plain.next()
        assert (progress.watch_id, len(progress.events)) == (-1, 0)
        assert progress.header.revision == before  # all it has: the majority's write never reached it
        # unary calls too: a hasleader serializable Range is refused, a plain one answered locally
        with pytest.raises(grpc.RpcError) as no_leader:
            cut.kv.Range(pb.RangeRequest(key=prefix + b"a", serializable=True), metadata=kube.REQUIRE_LEADER)
        assert (no_leader.value.code(), no_leader.value.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "etcdserver: no leader",
        )
        assert cut.kv.Range(pb.RangeRequest(key=prefix + b"a", serializable=True)).count == 1
        # the health check (a linearizable Range) fails on the isolated member
        with pytest.raises(grpc.RpcError) as health:
            cut.k.health()
        assert health.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

        partitioner.heal()
        assert [e.kv.mod_revision for e in plain.events(1)] == [after]  # caught up after the heal
        plain.send(kube.PROGRESS_REQUEST)
        deadline = time.monotonic() + WAIT
        while True:
            progress = plain.next()
            if progress.watch_id == -1 and progress.header.revision >= after:
                break
            assert time.monotonic() < deadline
        for w in (watched, plain, refused):
            w.close()
    finally:
        for a in apis:
            a.close()
        partitioner.heal()
        target.stop()
