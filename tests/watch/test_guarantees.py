"""Hypothesis: random writes and random watchers see exactly the store's history (etcd's six guarantees).

Writes (puts, deletes, multi-key txns, batches of requests applied together, compactions) go
through the real applier; watchers are opened on two streams at random past, present or future
revisions with random ranges, filters and prev_kv, canceled, and resumed from the last revision
they saw. The hub is driven step by step (catch-up steps, victim retries, partial reads by a slow
client with a tiny queue limit) and every response is checked as the client receives it:

- ordered: a watcher's events never go back in revision, and keep the store's order inside one;
- unique: no event twice;
- atomic: a response holds every event of each revision it carries (after the watcher's filters);
- reliable: a watcher's events are exactly the history in its range from its start revision up to
  the last revision it saw (no gap), and at the end up to the current revision; prev_kv is the
  key's value at the revision before (or left out, when that revision is compacted);
- resumable: a watcher reopened at the revision after the last one seen continues seamlessly
  (each watcher is checked whole, so the chain is);
- bookmarkable: a progress response at revision R comes after every event up to R.

Compaction follows etcd: a watcher that needs a compacted revision is canceled with
compact_revision, and the cancel must be deserved (the watcher's next revision < compact_revision,
with everything before it received). Compaction revisions are drawn among revisions without
deletions: like etcd, a watcher starting exactly at the compacted revision cannot see a deletion
made at that revision (its tombstone is the first thing compaction removes).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from kvstore.apply import Op
from kvstore.watch import WatchStream
from kvstore.watch.watcher import DONE, Watcher
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import KeyValue
from tests.watch.harness import Node

KEYS = [b"a", b"ab", b"b", b"c", b"\x00"]
KEY = st.sampled_from(KEYS)
VALUE = st.binary(max_size=12)
END = st.sampled_from([b"", b"\x00", b"b", b"c", b"d"])  # "" = the key alone, "\0" = from the key on
PUT, DELETE = 0, 1


def in_range(k: bytes, key: bytes, end: bytes | None) -> bool:
    if end is None:
        return k == key
    if end == b"":
        return k >= key
    return key <= k < end


@dataclass
class Client:
    """What one watcher's client has seen."""

    watcher: Watcher
    stream: WatchStream
    start: int
    key: bytes
    end: bytes | None
    noput: bool
    nodelete: bool
    prev_kv: bool
    events: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)  # (rev, index in rev, key, value)
    seen: int = 0  # the last revision this client knows it has everything up to
    created: bool = False
    cancel_sent: bool = False
    finished: str = ""  # "canceled" or "compacted"


class WatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="watch-model-"))
        self.node = Node(self.dir / "db", batch_revs=3, batch_bytes=300, queue_limit=400, max_watchers_per_step=3)
        self.streams = [self.node.hub.new_stream(), self.node.hub.new_stream()]
        self.clients: dict[tuple[int, int], Client] = {}  # (stream number, watch id)
        self.states: dict[int, dict[bytes, KeyValue]] = {1: {}}  # revision -> keyspace
        self.compacted = 0
        self.progress_asked = [0, 0]

    def teardown(self) -> None:
        try:
            for _ in range(10_000):
                for i in range(2):
                    self._receive(i, None)
                hub = self.node.hub
                if not hub.unsynced and not hub._kicked and not any(s.queue for s in self.streams):
                    break
                hub.retry_victims()
                hub.sync_step()
            rev = self.node.rev
            for c in self.clients.values():
                if c.finished or c.cancel_sent:
                    continue
                assert c.watcher.state != DONE
                assert c.events == self._expected(c, rev), f"watcher {c.watcher} incomplete at the end"
        finally:
            self.node.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the model ----

    def _record(self) -> None:
        """Extends states with the revisions the last apply created."""
        last = max(self.states)
        for rev, evs in self.node.history:
            if rev <= last:
                continue
            state = dict(self.states[rev - 1])
            for kind, kv in evs:
                if kind == PUT:
                    state[kv.key] = kv
                else:
                    del state[kv.key]
            self.states[rev] = state

    def _expected(self, c: Client, upto: int) -> list[tuple[int, int, bytes, bytes]]:
        out = []
        for rev, evs in self.node.history:
            if rev < c.start or rev > upto:
                continue
            for i, (kind, kv) in enumerate(evs):
                if not in_range(kv.key, c.key, c.end):
                    continue
                if (kind == PUT and c.noput) or (kind == DELETE and c.nodelete):
                    continue
                out.append((rev, i, kv.key, kv.value))
        return out

    def _history_index(self, rev: int, key: bytes) -> tuple[int, int]:
        for r, evs in self.node.history:
            if r == rev:
                for i, (kind, kv) in enumerate(evs):
                    if kv.key == key:
                        return i, kind
        raise AssertionError(f"no event on {key!r} at {rev}")

    # ---- writes ----

    @rule(key=KEY, value=VALUE)
    def put(self, key: bytes, value: bytes) -> None:
        self.node.put(key, value)
        self._record()

    @rule(key=KEY, end=END)
    def delete(self, key: bytes, end: bytes) -> None:
        if end not in (b"", b"\x00") and end <= key:
            end = b""
        self.node.delete(key, end)
        self._record()

    @rule(keys=st.lists(KEY, min_size=2, max_size=4, unique=True), value=VALUE, ndel=st.integers(0, 2))
    def txn(self, keys: list[bytes], value: bytes, ndel: int) -> None:
        alive = self.states[max(self.states)]
        deletes = [k for k in keys[:ndel] if k in alive]
        puts = [(k, value) for k in keys if k not in deletes]
        self.node.txn(puts, deletes)
        self._record()

    @rule(writes=st.lists(st.tuples(KEY, VALUE), min_size=2, max_size=4))
    def batch(self, writes: list[tuple[bytes, bytes]]) -> None:
        """Several requests applied in one batch: one notify with several revisions."""
        self.node.apply_many([(Op.PUT, pb.PutRequest(key=k, value=v)) for k, v in writes])
        self._record()

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        without_deletes = [
            rev for rev, evs in self.node.history if rev > self.compacted and all(kind == PUT for kind, _ in evs)
        ]
        if not without_deletes:
            return
        rev = data.draw(st.sampled_from(without_deletes))
        self.node.compact(rev)
        self.compacted = rev

    # ---- watchers ----

    @rule(
        data=st.data(),
        n=st.integers(0, 1),
        key=KEY,
        end=END,
        filters=st.sampled_from([[], [pb.WatchCreateRequest.NOPUT], [pb.WatchCreateRequest.NODELETE]]),
        prev_kv=st.booleans(),
    )
    def create(self, data: st.DataObject, n: int, key: bytes, end: bytes, filters: list[int], prev_kv: bool) -> None:
        if end not in (b"", b"\x00") and end <= key:
            end = b""
        start = data.draw(st.one_of(st.just(0), st.integers(1, self.node.rev + 2)), label="start")
        self._open(n, key, end, start, filters, prev_kv)

    def _open(self, n: int, key: bytes, end: bytes, start: int, filters: list[int], prev_kv: bool) -> None:
        stream = self.streams[n]
        w = stream.create(
            pb.WatchCreateRequest(key=key, range_end=end, start_revision=start, filters=filters, prev_kv=prev_kv)
        )
        assert w is not None
        self.clients[(n, w.id)] = Client(
            watcher=w,
            stream=stream,
            start=start or self.node.rev + 1,
            key=w.key,
            end=w.end,
            noput=w.noput,
            nodelete=w.nodelete,
            prev_kv=prev_kv,
            seen=(start or self.node.rev + 1) - 1,
        )

    def _live(self) -> list[tuple[tuple[int, int], Client]]:
        return [(k, c) for k, c in self.clients.items() if not c.finished and not c.cancel_sent]

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        (n, wid), c = data.draw(st.sampled_from(self._live()))
        c.cancel_sent = True
        self.streams[n].cancel(wid)

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), to=st.integers(0, 1))
    def resume(self, data: st.DataObject, to: int) -> None:
        """A client drops its watcher and reopens it from the revision after the last one it saw."""
        (n, wid), c = data.draw(st.sampled_from(sorted(self.clients.items(), key=lambda kv: kv[0])))
        if not c.finished and not c.cancel_sent:
            c.cancel_sent = True
            self.streams[n].cancel(wid)
        filters = ([pb.WatchCreateRequest.NOPUT] if c.noput else []) + (
            [pb.WatchCreateRequest.NODELETE] if c.nodelete else []
        )
        end = b"" if c.end is None else (b"\x00" if c.end == b"" else c.end)
        self._open(to, c.key, end, c.seen + 1, filters, c.prev_kv)

    # ---- the hub's background work, one step at a time ----

    @rule()
    def sync_step(self) -> None:
        self.node.hub.sync_step()

    @rule()
    def retry_victims(self) -> None:
        self.node.hub.retry_victims()

    @rule(n=st.integers(0, 1))
    def request_progress(self, n: int) -> None:
        self.streams[n].request_progress()

    @rule(n=st.integers(0, 1))
    def progress_tick(self, n: int) -> None:
        for c in self.clients.values():
            if c.stream is self.streams[n]:
                c.watcher.progress_notify = True
                self.node.hub.stream_state(self.streams[n]).progress_watchers[c.watcher] = None
        self.node.hub.progress_tick(self.streams[n])

    # ---- the client reads ----

    @rule(n=st.integers(0, 1), limit=st.integers(1, 6))
    def receive(self, n: int, limit: int) -> None:
        self._receive(n, limit)

    def _receive(self, n: int, limit: int | None) -> None:
        stream = self.streams[n]
        got = 0
        while limit is None or got < limit:
            item = stream.pop()
            if item is None:
                return
            got += 1
            self._check(n, item[0])

    def _check(self, n: int, r: pb.WatchResponse) -> None:
        rev_now = self.node.rev
        if r.watch_id == -1:
            assert not r.created and not r.canceled and not r.events
            self._bookmark(n, r.header.revision, None)
            return
        c = self.clients[(n, r.watch_id)]
        if r.created:
            assert not c.created and not c.events and not r.canceled
            c.created = True
            return
        assert c.created, "a response before the created response"
        if r.canceled:
            if r.compact_revision:
                w = c.watcher
                assert w.min_rev < r.compact_revision, "canceled by a compaction it did not need"
                assert c.events == self._expected(c, w.min_rev - 1)
                c.finished = "compacted"
            else:
                assert c.cancel_sent
                c.finished = "canceled"
            return
        if not r.events:
            self._bookmark(n, r.header.revision, c)
            return
        assert not c.finished
        revs = sorted({e.kv.mod_revision for e in r.events})
        assert r.header.revision >= revs[-1]
        last = c.events[-1] if c.events else (0, -1, b"", b"")
        got = []
        for e in r.events:
            idx, kind = self._history_index(e.kv.mod_revision, e.kv.key)
            assert e.type == kind
            item = (e.kv.mod_revision, idx, e.kv.key, e.kv.value)
            assert item[:2] > last[:2], "out of order or duplicated"
            last = item
            got.append(item)
            if c.prev_kv:
                self._check_prev(e)
            else:
                assert not e.HasField("prev_kv")
        # atomic: every event of each revision carried is here
        for rev in revs:
            expect = [x for x in self._expected(c, rev) if x[0] == rev]
            assert [x for x in got if x[0] == rev] == expect, f"revision {rev} split or incomplete"
        c.events.extend(got)
        c.seen = max(c.seen, revs[-1])
        # reliable: nothing missing up to what was seen
        assert c.events == self._expected(c, c.seen), "a gap"
        assert c.seen <= rev_now

    def _check_prev(self, e: object) -> None:
        kv = e.kv  # type: ignore[attr-defined]
        rev = kv.mod_revision
        create = e.type == PUT and kv.create_revision == rev  # type: ignore[attr-defined]
        before = self.states.get(rev - 1, {}).get(kv.key) if rev - 1 in self.states else None
        if e.HasField("prev_kv"):  # type: ignore[attr-defined]
            assert not create and before is not None
            assert e.prev_kv == before  # type: ignore[attr-defined]
        else:
            assert create or before is None or rev - 1 < self.node.store.compact_main_rev

    def _bookmark(self, n: int, rev: int, only: Client | None) -> None:
        """A progress response at rev: every event up to rev was already delivered."""
        assert rev <= self.node.rev
        clients = [only] if only is not None else [c for c in self.clients.values() if c.stream is self.streams[n]]
        for c in clients:
            if c.finished or c.cancel_sent or not c.created:
                continue
            assert c.events == self._expected(c, rev), f"progress at {rev} before all events of {c.watcher}"
            c.seen = max(c.seen, rev)


TestWatchGuarantees = WatchMachine.TestCase
TestWatchGuarantees.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
