"""The Watch gRPC service in process: raftkv's front end serving WatchService over a real store and hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from frontend.grpc import ServerCall
from kvstore.apply import Op
from kvstore.server.watch_service import WatchService
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.watch.harness import Node, WatchServer

C = pb.WatchCreateRequest


class Client:
    """One Watch call: requests are queued, responses read with a timeout (a bound on a hang: generous)."""

    def __init__(self, endpoint: str, metadata: tuple = ()) -> None:
        self.channel = grpc.aio.insecure_channel(endpoint)
        self.requests: asyncio.Queue = asyncio.Queue()
        self.call = rpc_pb2_grpc.WatchStub(self.channel).Watch(self._gen(), metadata=metadata or None)

    async def _gen(self) -> AsyncIterator[pb.WatchRequest]:
        while True:
            req = await self.requests.get()
            if req is None:
                return
            yield req

    def create(self, **kw: object) -> None:
        self.requests.put_nowait(pb.WatchRequest(create_request=C(**kw)))  # type: ignore[arg-type]

    def cancel(self, watch_id: int) -> None:
        self.requests.put_nowait(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=watch_id)))

    def progress(self) -> None:
        self.requests.put_nowait(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))

    async def recv(self, timeout: float = 30.0) -> pb.WatchResponse:
        return await asyncio.wait_for(self.call.read(), timeout)

    async def recv_n(self, n: int, timeout: float = 30.0) -> list[pb.WatchResponse]:
        return [await self.recv(timeout) for _ in range(n)]

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[WatchServer]:
    node = Node(tmp_path / "db", progress_interval=0.1)
    srv = await WatchServer(node).start()
    yield srv
    await srv.stop()
    node.close()


async def test_create_events_cancel_and_headers(server: WatchServer) -> None:
    node = server.node
    c = Client(server.endpoint)
    try:
        c.create(key=b"k", range_end=b"l", prev_kv=True)
        created = await c.recv()
        assert created.created and created.watch_id == 0
        assert (created.header.cluster_id, created.header.member_id, created.header.raft_term) == (0xC1, 0xA1, 2)
        assert created.header.revision == 1
        node.put(b"k1", b"a")
        node.txn([(b"k2", b"b"), (b"k3", b"c")])
        node.put(b"k1", b"d")
        r1, r2, r3 = await c.recv_n(3)
        assert [e.kv.key for e in r1.events] == [b"k1"] and r1.header.revision == 2
        assert [e.kv.key for e in r2.events] == [b"k2", b"k3"] and r2.header.revision == 3
        assert r3.events[0].prev_kv.value == b"a" and r3.header.member_id == 0xA1
        c.cancel(0)
        r = await c.recv()
        assert r.canceled and r.watch_id == 0 and not r.created
        node.put(b"k1")
        c.progress()  # no watcher left: not answered (etcd 3.5)
        c.create(key=b"z")
        c.progress()
        created, p = await c.recv_n(2)  # nothing for the canceled watcher came before
        assert created.created and created.watch_id == 1
        assert p.watch_id == -1 and p.header.revision == node.rev
    finally:
        await c.close()


async def test_bad_requests_get_etcds_answers(server: WatchServer) -> None:
    c = Client(server.endpoint)
    try:
        c.create(key=b"b", range_end=b"a")
        c.create(key=b"a", watch_id=5)
        c.create(key=b"b", watch_id=5)
        c.cancel(99)
        c.requests.put_nowait(pb.WatchRequest())
        c.create(key=b"c")
        empty, first, dup, auto = await c.recv_n(4)
        assert (empty.watch_id, empty.created, empty.canceled) == (-1, True, True)
        assert empty.cancel_reason == "mvcc: watcher range is empty"
        assert (first.watch_id, first.canceled) == (5, False)
        assert (dup.watch_id, dup.canceled, dup.cancel_reason) == (
            -1,
            True,
            "mvcc: duplicate watch ID provided on the WatchStream",
        )
        assert (auto.watch_id, auto.created) == (0, True)  # the unknown cancel got no answer
    finally:
        await c.close()


async def test_compaction_cancel_has_header_revision_zero(server: WatchServer) -> None:
    node = server.node
    for i in range(5):
        node.put(b"k", b"%d" % i)
    node.compact(4)
    c = Client(server.endpoint)
    try:
        c.create(key=b"k", start_revision=2)
        created, canceled = await c.recv_n(2)
        assert created.created
        assert canceled.canceled and canceled.compact_revision == 4 and canceled.header.revision == 0
        assert canceled.header.cluster_id == 0xC1
        c.create(key=b"k", start_revision=4)
        created, caught_up = await c.recv_n(2)
        assert [e.kv.mod_revision for e in caught_up.events] == [4, 5, 6]
    finally:
        await c.close()


async def test_history_then_live_without_gap_while_writing(server: WatchServer) -> None:
    node = server.node
    node.hub.batch_revs = 50
    for i in range(400):
        node.put(b"h/%d" % (i % 7), b"%d" % i)
    c = Client(server.endpoint)
    try:
        c.create(key=b"h/", range_end=b"h0", start_revision=2)
        assert (await c.recv()).created
        revs: list[int] = []
        writes = 0
        while len(revs) < 400 + 100:
            if writes < 100:
                node.put(b"h/x", b"live")  # concurrent with the catch-up
                writes += 1
                await asyncio.sleep(0)
            r = await c.recv()
            revs += [e.kv.mod_revision for e in r.events]
        assert revs == list(range(2, 2 + 500))
    finally:
        await c.close()


async def test_progress_notify_and_progress_request(server: WatchServer) -> None:
    node = server.node
    c = Client(server.endpoint)
    try:
        c.create(key=b"q", progress_notify=True)
        assert (await c.recv()).created
        node.put(b"other")
        # every 0.1 s (+ jitter) from the stream's start: one may have gone out before the put (a slow
        # test gets there late), at the revision before it; the next one is at the current revision
        while True:
            r = await c.recv()
            assert (r.watch_id, len(r.events), r.created, r.canceled) == (0, 0, False, False)
            if r.header.revision == node.rev:
                break
            assert r.header.revision == node.rev - 1, r
        c.progress()
        while True:
            r = await c.recv()
            if r.watch_id == -1:
                break
        assert r.header.revision == node.rev
    finally:
        await c.close()


async def test_fragmented_responses(tmp_path: Path) -> None:
    node = Node(tmp_path / "db")
    srv = WatchServer(node)
    srv.member.cfg.max_request_bytes = 1  # fragment limit: 1 byte + gRPC's 512 KiB overhead allowance
    await srv.start()
    c = Client(srv.endpoint)
    try:
        for i in range(8):
            node.put(b"big/%d" % i, bytes([65 + i]) * 150_000)
        c.create(key=b"big/", range_end=b"big0", start_revision=1, fragment=True)
        c.create(key=b"big/", range_end=b"big0", start_revision=1, fragment=False, watch_id=9)
        got: dict[int, list[pb.WatchResponse]] = {0: [], 9: []}
        while not got[9] or not got[0] or got[0][-1].fragment:
            r = await c.recv()
            if not r.created:
                got[r.watch_id].append(r)
        parts = got[0]
        assert len(parts) >= 3 and [p.fragment for p in parts] == [True] * (len(parts) - 1) + [False]
        assert all(p.ByteSize() < 512 * 1024 + 1 for p in parts)
        assert all(p.header.revision == node.rev for p in parts)
        assert [e for p in parts for e in p.events] == list(got[9][0].events)
        assert len(got[9]) == 1 and len(got[9][0].events) == 8
    finally:
        await c.close()
        await srv.stop()
        node.close()


async def test_hasleader_streams_end_after_three_election_timeouts(server: WatchServer) -> None:
    member = server.member
    member.log.leader = 0
    refused = Client(server.endpoint, metadata=(("hasleader", "true"),))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await refused.recv()
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and exc.value.details() == "etcdserver: no leader"
    await refused.close()
    member.log.leader = 1
    leader_bound = Client(server.endpoint, metadata=(("hasleader", "true"),))
    plain = Client(server.endpoint)
    try:
        leader_bound.create(key=b"k")
        plain.create(key=b"k")
        assert (await leader_bound.recv()).created and (await plain.recv()).created
        loop = asyncio.get_running_loop()
        member.log.leader = 0
        lost = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await leader_bound.recv()
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and exc.value.details() == "etcdserver: no leader"
        # 3 x 100 ms election timeouts, checked every 100 ms: not at once (a busy loop only makes it later)
        assert loop.time() - lost >= 0.2
        server.node.put(b"k")
        assert (await plain.recv()).events  # a stream without hasleader is untouched
        assert server.node.hub.synced.size == 1
    finally:
        await leader_bound.close()
        await plain.close()


async def test_vanishing_client_removes_its_watchers(server: WatchServer) -> None:
    node = server.node
    hub = node.hub
    node.put(b"k")
    c = Client(server.endpoint)
    for i in range(50):
        c.create(key=b"k%d" % i)
    c.create(key=b"k", start_revision=1)
    await c.recv_n(51)
    assert hub.synced.size >= 50 and len(hub.streams) == 1
    await c.close()
    async with asyncio.timeout(30):
        while hub.streams:
            await asyncio.sleep(0.02)
    assert not hub.streams and not hub.synced and not hub.unsynced


class EndOfRequests:
    """A ServerCall seen through: sets ``ended`` once the client's side of the call has ended."""

    def __init__(self, call: ServerCall, ended: asyncio.Event) -> None:
        self._call = call
        self._ended = ended

    def __getattr__(self, name: str) -> object:
        return getattr(self._call, name)

    def __aiter__(self) -> EndOfRequests:
        return self

    async def __anext__(self) -> pb.WatchRequest:
        try:
            return await self._call.__anext__()
        except StopAsyncIteration:
            self._ended.set()
            raise


class ObservedWatchService(WatchService):
    """The Watch service, telling the test when a stream's requests have ended."""

    def __init__(self, member: object) -> None:
        super().__init__(member)
        self.requests_ended = asyncio.Event()

    async def Watch(self, call: ServerCall) -> None:
        await super().Watch(EndOfRequests(call, self.requests_ended))  # type: ignore[arg-type]


class ObservedWatchServer(WatchServer):
    service_type = ObservedWatchService


async def test_half_closed_client_keeps_receiving(tmp_path: Path) -> None:
    node = Node(tmp_path / "db")
    server = await ObservedWatchServer(node).start()
    service = server.service
    assert isinstance(service, ObservedWatchService)
    c = Client(server.endpoint)
    try:
        c.create(key=b"k")
        assert (await c.recv()).created
        c.requests.put_nowait(None)  # done writing
        await asyncio.wait_for(service.requests_ended.wait(), 30)  # the server has seen the half-close
        for _ in range(10):
            await asyncio.sleep(0)  # and had turns to act on it
        node.put(b"k", b"still")
        assert (await c.recv()).events[0].kv.value == b"still"
    finally:
        await c.close()
        await server.stop()
        node.close()


async def test_client_that_never_reads_is_cut_off_and_others_are_not(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", queue_limit=256 << 10, stream_memory_limit=2 << 20)
    srv = await WatchServer(node).start()
    stuck = Client(srv.endpoint)
    fine = Client(srv.endpoint)
    try:
        for _ in range(200):
            stuck.create(key=b"big")
        stuck.requests.put_nowait(None)  # all requests sent: the client only stops reading
        fine.create(key=b"big")
        await stuck.recv()  # the stream is up (one response read, then never again)
        assert (await fine.recv()).created
        async with asyncio.timeout(30):
            while node.hub.synced.size < 201:
                await asyncio.sleep(0.01)
        for _ in range(40):
            if len(node.hub.streams) < 2:
                break
            node.put(b"big", b"x" * 20_000)
            assert len((await fine.recv()).events) == 1
            await asyncio.sleep(0.01)
        assert len(node.hub.streams) == 1  # the stuck one is gone
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            while True:
                await stuck.recv()
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "does not read its events" in exc.value.details()
        node.put(b"big", b"y")
        assert (await fine.recv()).events[0].kv.value == b"y"
    finally:
        await stuck.close()
        await fine.close()
        await srv.stop()
        node.close()


async def test_thousands_of_watchers_on_one_stream(server: WatchServer) -> None:
    c = Client(server.endpoint)
    try:
        n = 3000
        for i in range(n):
            c.create(key=b"w/%d" % (i % 10))
        c.create(key=b"w/", range_end=b"w0")
        await c.recv_n(n + 1)
        # (how fast they are served is bench/watch.py's fanout measurement, not asserted here)
        server.node.apply_many([(Op.PUT, pb.PutRequest(key=b"w/%d" % i, value=b"v")) for i in range(10)])
        got = await c.recv_n(n + 10)
        assert sum(len(r.events) for r in got) == n + 10
        assert sorted(r.watch_id for r in got) == sorted([*range(n), *[n] * 10])
    finally:
        await c.close()
