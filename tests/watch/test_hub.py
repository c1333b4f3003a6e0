"""The watch hub driven by hand: synced, unsynced and victim watchers, compaction, filters, prev_kv, progress."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.mvcc import Backend, KVStore
from kvstore.watch import SlowConsumer, WatchHub
from kvstore.watch.watcher import DONE, SYNCED, UNSYNCED, VICTIM
from proto.etcdserverpb import rpc_pb2 as pb
from tests.watch.harness import Node, create, drain_stream, events

PUT, DELETE = 0, 1


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "db")
    yield n
    n.close()


def only_events(responses: list[pb.WatchResponse]) -> list[pb.WatchResponse]:
    return [r for r in responses if r.events]


# ---- synced ----


def test_synced_watcher_gets_each_revision_in_one_response(node: Node) -> None:
    s = node.hub.new_stream()
    wid = create(s, b"k", b"l")  # [k, l)
    [created] = drain_stream(s)
    assert created.created and created.watch_id == wid and created.header.revision == 1
    r1 = node.put(b"k1", b"a")
    node.put(b"z", b"outside")
    r2 = node.txn([(b"k2", b"b"), (b"k3", b"c"), (b"zz", b"d")])
    r3 = node.delete(b"k", b"l")
    got = drain_stream(s)
    assert [r.header.revision for r in got] == [r1, r2, r3]
    assert events(got[:1]) == [(r1, PUT, b"k1", b"a")]
    assert events(got[1:2]) == [(r2, PUT, b"k2", b"b"), (r2, PUT, b"k3", b"c")]  # one txn, one response
    assert events(got[2:]) == [(r3, DELETE, b"k1", b""), (r3, DELETE, b"k2", b""), (r3, DELETE, b"k3", b"")]
    assert all(r.watch_id == wid for r in got)


def test_single_key_prefix_and_from_key_watchers(node: Node) -> None:
    s = node.hub.new_stream()
    single = create(s, b"a")
    prefix = create(s, b"a", b"b")
    from_key = create(s, b"b", b"\x00")
    everything = create(s, b"", b"\x00")  # empty key and "\0": every key
    empty_key = create(s, b"")  # the single key "\0"
    drain_stream(s)
    for k in (b"a", b"ab", b"b", b"c\xff", b"\x00"):
        node.put(k)
    got = drain_stream(s)
    keys = {wid: [e[2] for e in events(got, wid)] for wid in (single, prefix, from_key, everything, empty_key)}
    assert keys == {
        single: [b"a"],
        prefix: [b"a", b"ab"],
        from_key: [b"b", b"c\xff"],
        everything: [b"a", b"ab", b"b", b"c\xff", b"\x00"],
        empty_key: [b"\x00"],
    }


def test_events_of_a_batch_keep_revision_order_and_start_revision_in_the_future(node: Node) -> None:
    s = node.hub.new_stream()
    future = create(s, b"k", start=node.rev + 3)
    now = create(s, b"k")
    drain_stream(s)
    node.apply_many([(0 + 1, pb.PutRequest(key=b"k", value=str(i).encode())) for i in range(5)])  # Op.PUT == 1
    got = drain_stream(s)
    assert [e[0] for e in events(got, now)] == [2, 3, 4, 5, 6]
    assert [e[0] for e in events(got, future)] == [4, 5, 6]


def test_filters_and_all_filtered_sends_nothing(node: Node) -> None:
    s = node.hub.new_stream()
    noput = create(s, b"k", filters=[pb.WatchCreateRequest.NOPUT])
    nodel = create(s, b"k", filters=[pb.WatchCreateRequest.NODELETE])
    both = create(s, b"k", filters=[pb.WatchCreateRequest.NOPUT, pb.WatchCreateRequest.NODELETE])
    odd = create(s, b"k", filters=[7])  # unknown filters are ignored, as etcd does
    drain_stream(s)
    node.put(b"k", b"1")
    node.delete(b"k")
    got = drain_stream(s)
    assert [e[1] for e in events(got, noput)] == [DELETE]
    assert [e[1] for e in events(got, nodel)] == [PUT]
    assert [e[1] for e in events(got, odd)] == [PUT, DELETE]
    assert not [r for r in got if r.watch_id == both]


def test_prev_kv_for_updates_and_deletes_not_for_creates(node: Node) -> None:
    s = node.hub.new_stream()
    wid = create(s, b"k", prev_kv=True)
    plain = create(s, b"k")
    drain_stream(s)
    node.put(b"k", b"1")
    node.put(b"k", b"2")
    node.delete(b"k")
    got = [r for r in drain_stream(s) if r.watch_id == wid]
    assert [e.HasField("prev_kv") for r in got for e in r.events] == [False, True, True]
    assert got[1].events[0].prev_kv.value == b"1" and got[1].events[0].prev_kv.mod_revision == 2
    assert got[2].events[0].prev_kv.value == b"2" and got[2].events[0].kv.mod_revision == 4
    plain_got = [e for r in drain_stream(s) if r.watch_id == plain for e in r.events]
    assert not any(e.HasField("prev_kv") for e in plain_got)


def test_an_event_is_encoded_once_for_all_its_watchers(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    import kvstore.watch.watcher as watcher_module

    built = []
    real_event = watcher_module.Event

    def counting_event(**kw: object) -> object:
        built.append(kw)
        return real_event(**kw)

    monkeypatch.setattr(watcher_module, "Event", counting_event)
    streams = [node.hub.new_stream() for _ in range(3)]
    for s in streams:
        for _ in range(50):
            create(s, b"p", b"q")
        create(s, b"p1", prev_kv=True)
    node.put(b"p1", b"a")
    node.put(b"p1", b"b")
    assert len(built) == 3  # put a; put b; put b with its prev_kv
    for s in streams:
        assert len(only_events(drain_stream(s))) == 102


# ---- unsynced ----


def test_unsynced_catches_up_in_bounded_batches_without_gap_or_duplicate(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", batch_revs=3)
    try:
        for i in range(10):
            node.put(b"k", str(i).encode())
        s = node.hub.new_stream()
        wid = create(s, b"k", start=2)
        assert node.hub.unsynced
        got: list[pb.WatchResponse] = []
        steps = 0
        while node.hub.unsynced:
            node.hub.sync_step()
            steps += 1
            node.put(b"k", b"live-%d" % steps)  # writes land between catch-up steps
            got += drain_stream(s)
        node.put(b"k", b"after")
        got += drain_stream(s)
        revs = [e[0] for e in events(got, wid)]
        assert revs == list(range(2, node.rev + 1))
        assert steps >= 4
        # each catch-up response holds whole revisions, at most batch_revs of them, and carries the
        # store's revision in its header even with more to read, as etcd's catch-up does
        for r in only_events(got):
            assert len({e.kv.mod_revision for e in r.events}) <= 3
        first = only_events(got)[0]
        assert first.header.revision > max(e.kv.mod_revision for e in first.events)
    finally:
        node.close()


def test_catch_up_is_bounded_by_bytes_and_never_splits_a_revision(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", batch_bytes=100)
    try:
        for _i in range(6):
            node.txn([(b"a%d" % j, b"x" * 40) for j in range(3)])
        s = node.hub.new_stream()
        wid = create(s, b"a", b"b", start=1)
        got = node.catch_up([s])[s]
        responses = [r for r in got if r.events]
        assert len(responses) >= 3
        for r in responses:
            per_rev: dict[int, int] = {}
            for e in r.events:
                per_rev[e.kv.mod_revision] = per_rev.get(e.kv.mod_revision, 0) + 1
            assert set(per_rev.values()) == {3}
        assert len(events(got, wid)) == 18
        assert node.hub.synced and not node.hub.unsynced
    finally:
        node.close()


def test_catch_up_response_header_is_the_current_revision_when_done(node: Node) -> None:
    node.put(b"k", b"1")
    node.put(b"x", b"2")
    s = node.hub.new_stream()
    create(s, b"k", start=1)
    got = node.catch_up([s])[s]
    [r] = only_events(got)
    assert r.header.revision == node.rev == 3


def test_catch_up_prev_kv_and_delete_revisions(node: Node) -> None:
    node.put(b"k", b"1")
    node.put(b"k", b"2")
    node.delete(b"k")
    node.put(b"k", b"3")
    s = node.hub.new_stream()
    wid = create(s, b"k", start=2, prev_kv=True)
    got = only_events(node.catch_up([s])[s])
    evs = [e for r in got for e in r.events]
    assert [(e.type, e.kv.mod_revision, e.kv.value) for e in evs] == [
        (PUT, 2, b"1"),
        (PUT, 3, b"2"),
        (DELETE, 4, b""),
        (PUT, 5, b"3"),
    ]
    assert [e.prev_kv.value if e.HasField("prev_kv") else None for e in evs] == [None, b"1", b"2", None]
    assert all(r.watch_id == wid for r in got)


def test_watchers_far_apart_all_catch_up(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", batch_revs=5, max_watchers_per_step=2)
    try:
        for i in range(40):
            node.put(b"k%d" % (i % 4), b"%d" % i)
        s = node.hub.new_stream()
        ids = {create(s, b"k", b"l", start=start): start for start in (2, 3, 17, 30, 40, 41, 50)}
        got = node.catch_up([s])[s]
        for wid, start in ids.items():
            assert [e[0] for e in events(got, wid)] == list(range(start, 42)), start
        assert not node.hub.unsynced and node.hub.synced.size == 7
    finally:
        node.close()


# ---- compaction ----


def test_compacted_start_revision_is_canceled_with_compact_revision(node: Node) -> None:
    for i in range(6):
        node.put(b"k", b"%d" % i)
    node.compact(5)
    s = node.hub.new_stream()
    old = create(s, b"k", start=4, watch_id=7)
    at = create(s, b"k", start=5)
    got = node.catch_up([s])[s]
    canceled = [r for r in got if r.canceled]
    assert len(canceled) == 1
    c = canceled[0]
    assert (c.watch_id, c.compact_revision, c.header.revision, c.created) == (old, 5, 0, False)
    assert [e[0] for e in events(got, at)] == [5, 6, 7]
    # the compacted watcher keeps its id until the client cancels it, as in etcd
    assert s.create(pb.WatchCreateRequest(key=b"k", watch_id=old)) is None
    assert drain_stream(s)[-1].cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
    s.cancel(old)
    [cancel] = drain_stream(s)
    assert cancel.canceled and cancel.watch_id == old
    assert s.create(pb.WatchCreateRequest(key=b"k", watch_id=old)) is not None


def test_watch_from_the_compaction_revision_sees_the_deletion_there(node: Node) -> None:
    """etcd-io/etcd#18089 (in etcd 3.4.23 still; fixed in 3.4.34 and 3.5.15): compacting at the
    revision of a deletion dropped the tombstone, so a watch from that revision missed it."""
    node.put(b"k", b"2")
    node.put(b"k", b"3")
    node.put(b"k", b"4")
    deleted_at = node.delete(b"k")
    node.put(b"k", b"6")
    node.compact(deleted_at)
    s = node.hub.new_stream()
    wid = create(s, b"k", start=deleted_at)
    got = node.catch_up([s])[s]
    assert [(e[0], e[1]) for e in events(got, wid)] == [(deleted_at, DELETE), (deleted_at + 1, PUT)]
    assert node.store.range(b"k", None, rev=deleted_at).count == 0  # reads at it: still deleted
    node.compact(deleted_at + 1)  # the next compaction removes the tombstone
    assert node.store.index.get(b"k", deleted_at + 1) == ((deleted_at + 1, 0), (deleted_at + 1, 0), 1)
    s2 = node.hub.new_stream()
    wid2 = create(s2, b"k", start=deleted_at + 1)
    assert [(e[0], e[1]) for e in events(node.catch_up([s2])[s2], wid2)] == [(deleted_at + 1, PUT)]


def test_a_tombstone_kept_by_compaction_survives_a_restart_and_a_resumed_compaction(tmp_path: Path) -> None:
    node = Node(tmp_path / "db")
    node.put(b"k", b"1")
    node.put(b"other", b"x")
    deleted_at = node.delete(b"k")
    node.compact(deleted_at)  # the backend now holds k only as its tombstone
    node.put(b"other", b"y")
    node.compact(deleted_at + 1, physical=False)  # scheduled, interrupted before any delete
    node.close()
    node = Node(tmp_path / "db")  # restart: the index is rebuilt and the compaction resumed
    try:
        [job] = node.store.pending_compactions
        assert job.rev == deleted_at + 1 and (deleted_at, 0) not in job.keep
        while not node.store.compaction_step(job, batch=7):
            pass
        node.store.pending_compactions.remove(job)
        assert node.store.index.get(b"k", deleted_at + 1) is None
        assert b"k" not in node.store.index._tree  # gone from the index too
    finally:
        node.close()


def test_compaction_while_catching_up_cancels_the_watcher(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", batch_revs=2)
    try:
        for i in range(10):
            node.put(b"k", b"%d" % i)
        s = node.hub.new_stream()
        wid = create(s, b"k", start=2)
        node.hub.sync_step()  # revisions 2 and 3
        node.compact(8)
        got = node.catch_up([s])[s]
        assert [e[0] for e in events(got, wid)] == [2, 3]
        assert got[-1].canceled and got[-1].compact_revision == 8
        assert not node.hub.unsynced and node.hub.stream_state(s).not_synced == 0
    finally:
        node.close()


def test_negative_start_revision_is_canceled_like_etcd(node: Node) -> None:
    node.put(b"k")
    s = node.hub.new_stream()
    create(s, b"k", start=-5)
    got = node.catch_up([s])[s]
    assert got[-1].canceled and got[-1].compact_revision == -1  # etcd: minRev < compactRev (-1 when never compacted)


# ---- victims ----


def test_slow_stream_makes_victims_that_lose_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", queue_limit=300)
    try:
        s = node.hub.new_stream()
        fast = node.hub.new_stream()
        wids = [create(s, b"k", b"l") for _ in range(3)]
        fid = create(fast, b"k", b"l")
        drain_stream(s)
        fast_got = []
        for i in range(30):
            node.put(b"k%d" % (i % 3), b"x" * 20)
            fast_got += drain_stream(fast)
        hub = node.hub
        assert any(w.state == VICTIM for w in s.watchers.values())
        assert hub.stream_state(s).victims and s.held_bytes > 0
        got: list[pb.WatchResponse] = []
        for i in range(1000):  # the client reads slowly: one response at a time, writes keep coming
            got += drain_stream(s, limit=1)
            if i % 7 == 0 and i < 300:
                node.put(b"k%d" % (i % 3), b"y")
            hub.retry_victims()
            hub.sync_step()
            if not hub.unsynced and not hub.stream_state(s).victims and not s.queue:
                break
        assert not hub.stream_state(s).victims and s.held_bytes == 0
        for wid in wids:
            assert [e[0] for e in events(got, wid)] == list(range(2, node.rev + 1))
        fast_got += drain_stream(fast)
        assert [e[0] for e in events(fast_got, fid)] == list(range(2, node.rev + 1))  # never held back
        assert all(w.state == SYNCED for w in s.watchers.values())
    finally:
        node.close()


def test_a_stream_that_never_reads_is_canceled_past_its_memory_limit(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", queue_limit=1000, stream_memory_limit=20_000)
    try:
        stuck = node.hub.new_stream()
        ok = node.hub.new_stream()
        for _ in range(300):
            create(stuck, b"k")
        create(ok, b"k")
        woke = []
        stuck.on_ready = lambda: woke.append(1)
        for _i in range(20):
            node.put(b"k", b"x" * 100)
            drain_stream(ok)
            if stuck.error is not None:
                break
            # held back: the queue (up to its limit) and one response per victim, nothing more
            assert stuck.queued_bytes <= 1000 + 300 * 64 and len(node.hub.stream_state(stuck).victims) <= 300
        assert woke
        assert isinstance(stuck.error, SlowConsumer)
        assert stuck.closed and not stuck.watchers and not stuck.queue
        assert stuck not in node.hub.streams
        assert node.hub.synced.size == 1  # the other stream's watcher is untouched
        node.put(b"k", b"after")
        assert events(drain_stream(ok))[-1][3] == b"after"
    finally:
        node.close()


# ---- stream requests ----


def test_auto_ids_duplicates_invalid_ranges_and_unknown_cancels(node: Node) -> None:
    s = node.hub.new_stream()
    assert create(s, b"a", watch_id=1) == 1
    assert [create(s, b"a") for _ in range(3)] == [0, 2, 3]
    assert create(s, b"a", watch_id=-3) == -3
    drain_stream(s)
    assert s.create(pb.WatchCreateRequest(key=b"a", watch_id=2)) is None
    assert s.create(pb.WatchCreateRequest(key=b"b", range_end=b"a")) is None
    assert s.create(pb.WatchCreateRequest(key=b"b", range_end=b"b")) is None
    dup, empty1, empty2 = drain_stream(s)
    for r in (dup, empty1, empty2):
        assert (r.watch_id, r.created, r.canceled) == (-1, True, True)
    assert dup.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
    assert empty1.cancel_reason == empty2.cancel_reason == "mvcc: watcher range is empty"
    s.cancel(42)
    assert drain_stream(s) == []
    s.cancel(2)
    [r] = drain_stream(s)
    assert (r.watch_id, r.canceled, r.created) == (2, True, False)
    s.handle(pb.WatchRequest())  # no request at all: ignored
    assert drain_stream(s) == []


def test_progress_request_waits_until_every_watcher_is_synced(node: Node) -> None:
    for _ in range(5):
        node.put(b"k")
    s = node.hub.new_stream()
    s.request_progress()
    assert drain_stream(s) == []  # no watchers: etcd 3.5 answers nothing (3.4.23 answered at once)
    wid = create(s, b"k", start=2)
    drain_stream(s)
    s.request_progress()
    assert drain_stream(s) == []  # the watcher is unsynced
    node.hub.sync_step()
    got = drain_stream(s)
    assert [e[0] for e in events(got, wid)] == [2, 3, 4, 5, 6]
    assert (got[-1].watch_id, got[-1].header.revision, len(got[-1].events)) == (-1, 6, 0)
    s.request_progress()
    [r] = drain_stream(s)
    assert r.header.revision == 6


def test_progress_tick_only_for_quiet_synced_progress_watchers(node: Node) -> None:
    s = node.hub.new_stream()
    quiet = create(s, b"q", progress_notify=True)
    busy = create(s, b"b", progress_notify=True)
    create(s, b"n")  # no progress_notify
    drain_stream(s)
    node.put(b"b")
    drain_stream(s)
    node.hub.progress_tick(s)
    [r] = drain_stream(s)
    assert (r.watch_id, r.header.revision, len(r.events)) == (quiet, node.rev, 0)
    node.hub.progress_tick(s)  # busy was quiet since the last tick
    assert sorted(r.watch_id for r in drain_stream(s)) == sorted([quiet, busy])


def test_closing_a_stream_removes_all_its_watchers(tmp_path: Path) -> None:
    node = Node(tmp_path / "db", queue_limit=200)
    try:
        node.put(b"k")
        s = node.hub.new_stream()
        for _ in range(5):
            create(s, b"k")
        create(s, b"k", start=1)
        create(s, b"a", b"b")
        for _ in range(5):
            node.put(b"k", b"x" * 50)
        states = {w.state for w in s.watchers.values()}
        assert {SYNCED, UNSYNCED, VICTIM} <= states
        watchers = list(s.watchers.values())
        s.close()
        assert all(w.state == DONE for w in watchers)
        assert not node.hub.synced and not node.hub.unsynced and not node.hub.streams
        node.put(b"k")
        node.hub.sync_step()
        node.hub.retry_victims()
    finally:
        node.close()


def test_thousands_of_watchers_on_one_stream(node: Node) -> None:
    s = node.hub.new_stream()
    for i in range(3000):
        create(s, b"key/%04d" % i)
    for _ in range(1000):
        create(s, b"key/", b"key0")  # one shared prefix
    for i in range(1000):
        create(s, b"key/%04d" % i, b"key/%04d" % (i + 10))  # many distinct ranges
    drain_stream(s)
    node.put(b"key/0005")
    got = drain_stream(s)
    assert len(got) == 1 + 1000 + 6
    s.close()
    assert not node.hub.synced


# ---- snapshot install ----


def test_reset_resyncs_watchers_from_the_new_store(tmp_path: Path) -> None:
    node = Node(tmp_path / "a")
    ahead = Node(tmp_path / "b")
    try:
        for n in (node, ahead):
            n.put(b"k", b"1")
            n.put(b"k", b"2")
        s = node.hub.new_stream()
        synced = create(s, b"k")
        future = create(s, b"k", start=8)
        gone = create(s, b"x")
        drain_stream(s)
        for i in range(3, 10):
            ahead.put(b"k", b"%d" % i)
        ahead.put(b"x", b"y")
        # install "ahead" as a snapshot under node's hub
        ahead.backend.close()
        node.backend.close()
        shutil.copy(tmp_path / "b" / "data.mdb", tmp_path / "a" / "data.mdb")
        backend = Backend(tmp_path / "a")
        node.backend = backend
        node.store = KVStore(backend)
        node.hub.reset(node.store)
        got = node.catch_up([s])[s]
        assert [e[0] for e in events(got, synced)] == list(range(4, 11))
        assert [e[0] for e in events(got, future)] == [8, 9, 10]
        assert [e[0] for e in events(got, gone)] == [11]
        assert node.hub.synced.size == 3
    finally:
        node.backend.close()


def test_reset_cancels_watchers_the_snapshot_compacted(tmp_path: Path) -> None:
    node = Node(tmp_path / "a", batch_revs=2)
    try:
        for i in range(6):
            node.put(b"k", b"%d" % i)
        s = node.hub.new_stream()
        wid = create(s, b"k", start=2)
        drain_stream(s)
        node.hub.sync_step()
        node.compact(6)
        node.hub.reset(node.store)  # same store, compacted: the unsynced watcher is behind the compaction
        got = node.catch_up([s])[s]
        assert [e[0] for e in events(got, wid)] == [2, 3]
        assert got[-1].canceled and got[-1].compact_revision == 6
    finally:
        node.close()


def test_hub_without_watchers_costs_nothing_on_notify(node: Node) -> None:
    hub: WatchHub = node.hub
    hub.notify([(5, [(0, object())])])  # not even looked at


# ---- configuration ----


def test_progress_interval_from_etcds_flag_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvstore.watch.hub import DEFAULT_PROGRESS_INTERVAL, PROGRESS_ENV, parse_duration

    assert [parse_duration(t) for t in ("10m", "1.5s", "500ms", "1m30s", "2", "1h")] == [600, 1.5, 0.5, 90, 2, 3600]
    for bad in ("", "ms", "5 s", "1x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    backend = Backend(tmp_path / "db")
    try:
        store = KVStore(backend)
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
        assert WatchHub(store).progress_interval == DEFAULT_PROGRESS_INTERVAL == 600
        monkeypatch.setenv(PROGRESS_ENV, "2s")
        assert WatchHub(store).progress_interval == 2
        monkeypatch.setenv(PROGRESS_ENV, "10ms")
        assert WatchHub(store).progress_interval == 0.1  # etcd's minimum
        assert WatchHub(store, progress_interval=5).progress_interval == 5
    finally:
        backend.close()
