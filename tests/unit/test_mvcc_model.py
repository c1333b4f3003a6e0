"""Hypothesis stateful test: the MVCC store and applier against a small in-memory reference model.

The model keeps the whole keyspace as it was after every revision. Requests go through the real
path below the gRPC layer (protobuf request -> log codec -> Applier -> KVStore -> LMDB), and
after every step reads at every retained revision must agree with the model, as must the store
reopened from disk, and the stored history from the compacted revision on must hold every event
of every revision since (what a watcher starting there replays).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvstore.apply import Applier, CompactResult, Op, encode_request
from kvstore.apply.kv import do_range, range_end
from kvstore.errors import Compacted, DuplicateKey, FutureRev
from kvstore.mvcc import Backend, KVStore
from kvstore.mvcc.errors import CompactedError, FutureRevError, MvccError
from kvstore.mvcc.store import EVENT_DELETE, EVENT_PUT
from kvstore.server.validate import check_txn
from kvstore.watch.history import read_events
from proto.etcdserverpb import rpc_pb2 as pb

KEYS = st.sampled_from([b"a", b"ab", b"b", b"\x00", b"b\xff", b"c", b"\xff\xfe", b"d"])
VALUES = st.binary(max_size=6)
RANGE_ENDS = st.one_of(st.just(b""), KEYS)  # b"" is the key alone; b"\x00" (in KEYS) means every key >= key

# key -> (value, create_revision, mod_revision, version)
Snapshot = dict[bytes, tuple[bytes, int, int, int]]


def in_range(k: bytes, key: bytes, end: bytes | None) -> bool:
    if end is None:
        return k == key
    if end == b"":
        return k >= key
    return key <= k < end


class Model:
    def __init__(self) -> None:
        self.states: dict[int, Snapshot] = {1: {}}
        self.events: dict[int, list[tuple[int, bytes, bytes]]] = {}  # revision -> sorted (type, key, value)
        self.rev = 1
        self.compacted = -1

    def latest(self) -> Snapshot:
        return self.states[self.rev]

    def apply_ops(self, ops: list[tuple]) -> None:
        """Applies writes as one revision (only if anything changed)."""
        state = dict(self.latest())
        rev = self.rev + 1
        changed = False
        for op in ops:
            if op[0] == "put":
                _, key, value = op
                old = state.get(key)
                state[key] = (value, old[1] if old else rev, rev, old[3] + 1 if old else 1)
                changed = True
            else:
                _, key, end = op
                doomed = [k for k in state if in_range(k, key, end)]
                for k in doomed:
                    del state[k]
                changed = changed or bool(doomed)
        if changed:
            before = self.latest()
            self.rev = rev
            self.states[rev] = state
            puts = [(EVENT_PUT, k, v[0]) for k, v in state.items() if v[2] == rev]
            deletes = [(EVENT_DELETE, k, b"") for k in before if k not in state]
            self.events[rev] = sorted(puts + deletes)


class MVCCMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mvcc-model-"))
        self.model = Model()
        self.index = 0
        self._open()

    def _open(self) -> None:
        self.backend = Backend(self.dir / "db")
        self.store = KVStore(self.backend)
        self.applier = Applier(self.store)

    def teardown(self) -> None:
        self.backend.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _apply(self, op: Op, request: object) -> object:
        self.index += 1
        data = encode_request(op, self.index, request.SerializeToString())  # type: ignore[attr-defined]
        [(request_id, result)] = self.applier.apply([(self.index, 1, data)])
        assert request_id == self.index
        return result

    # ---- writes ----

    @rule(key=KEYS, value=VALUES, prev=st.booleans())
    def put(self, key: bytes, value: bytes, prev: bool) -> None:
        before = self.model.latest().get(key)
        resp = self._apply(Op.PUT, pb.PutRequest(key=key, value=value, prev_kv=prev))
        self.model.apply_ops([("put", key, value)])
        assert resp.header.revision == self.model.rev
        if prev and before:
            assert (resp.prev_kv.value, resp.prev_kv.version) == (before[0], before[3])
        else:
            assert not resp.HasField("prev_kv")

    @rule(key=KEYS, raw_end=RANGE_ENDS)
    def delete(self, key: bytes, raw_end: bytes) -> None:
        end = range_end(raw_end)
        expect = sorted(k for k in self.model.latest() if in_range(k, key, end))
        resp = self._apply(Op.DELETE_RANGE, pb.DeleteRangeRequest(key=key, range_end=raw_end, prev_kv=True))
        self.model.apply_ops([("del", key, end)])
        assert resp.deleted == len(expect)
        assert [kv.key for kv in resp.prev_kvs] == expect
        assert resp.header.revision == self.model.rev

    @rule(
        cmp_key=KEYS,
        cmp_value=VALUES,
        cmp_version=st.integers(0, 3),
        use_value=st.booleans(),
        success=st.lists(st.tuples(st.sampled_from(["put", "del"]), KEYS, VALUES), max_size=3),
        failure=st.lists(st.tuples(st.sampled_from(["put", "del"]), KEYS, VALUES), max_size=3),
    )
    def txn(self, cmp_key, cmp_value, cmp_version, use_value, success, failure) -> None:
        if use_value:
            compare = pb.Compare(key=cmp_key, target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=cmp_value)
            cur = self.model.latest().get(cmp_key)
            ok = cur is not None and cur[0] == cmp_value
        else:
            compare = pb.Compare(key=cmp_key, target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=cmp_version)
            cur = self.model.latest().get(cmp_key)
            ok = (cur[3] if cur else 0) > cmp_version

        def ops(spec):
            out = []
            for kind, key, value in spec:
                if kind == "put":
                    out.append(pb.RequestOp(request_put=pb.PutRequest(key=key, value=value)))
                else:
                    out.append(pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key)))
            return out

        req = pb.TxnRequest(compare=[compare], success=ops(success), failure=ops(failure))
        try:
            check_txn(req, 128)
        except DuplicateKey:
            return  # the server refuses these before they reach the log
        resp = self._apply(Op.TXN, req)
        assert resp.succeeded == ok
        chosen = success if ok else failure
        self.model.apply_ops([("put", k, v) if kind == "put" else ("del", k, None) for kind, k, v in chosen])
        assert resp.header.revision == self.model.rev
        assert len(resp.responses) == len(chosen)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(self.model.compacted - 1, self.model.rev + 1))
        result = self._apply(Op.COMPACT, pb.CompactionRequest(revision=rev))
        if rev <= self.model.compacted:
            assert isinstance(result, Compacted)
        elif rev > self.model.rev:
            assert isinstance(result, FutureRev)
        else:
            assert isinstance(result, CompactResult)
            while not self.store.compaction_step(result.job, batch=3):
                pass
            self.store.pending_compactions.remove(result.job)
            self.model.compacted = rev
            for r in [r for r in self.model.states if r < rev]:
                del self.model.states[r]
            for r in [r for r in self.model.events if r < rev]:
                del self.model.events[r]

    @rule()
    def reopen(self) -> None:
        self.backend.close()
        self._open()
        assert self.applier.applied_index == self.index
        self.index = self.applier.applied_index

    # ---- reads ----

    @rule(data=st.data(), key=KEYS, raw_end=RANGE_ENDS, limit=st.integers(0, 3))
    def range_with_options(self, data: st.DataObject, key: bytes, raw_end: bytes, limit: int) -> None:
        end = range_end(raw_end)
        m = self.model
        rev = data.draw(st.integers(-1, m.rev + 1))
        order = data.draw(st.sampled_from([pb.RangeRequest.NONE, pb.RangeRequest.ASCEND, pb.RangeRequest.DESCEND]))
        target = data.draw(st.sampled_from([pb.RangeRequest.KEY, pb.RangeRequest.MOD, pb.RangeRequest.VERSION]))
        req = pb.RangeRequest(
            key=key, range_end=raw_end, revision=rev, limit=limit, sort_order=order, sort_target=target
        )
        try:
            with self.store.read() as view:
                resp = do_range(view, req)
        except MvccError as exc:
            if rev > m.rev:
                assert isinstance(exc, FutureRevError)
            else:
                assert isinstance(exc, CompactedError) and 0 < rev < m.compacted
            return
        assert not (rev > m.rev or 0 < rev < m.compacted)
        state = m.states[rev if rev > 0 else m.rev]
        items = sorted((k, v) for k, v in state.items() if in_range(k, key, end))
        field = {pb.RangeRequest.KEY: None, pb.RangeRequest.MOD: 2, pb.RangeRequest.VERSION: 3}[target]
        total = len(items)
        if order == pb.RangeRequest.NONE and limit:
            # etcd's quirk: with no sort order the limit (plus one) is applied in key order
            # first, and only that window is then sorted by a non-key target
            items = items[: limit + 1]
        if order == pb.RangeRequest.DESCEND:
            items.sort(key=(lambda kv: kv[0]) if field is None else (lambda kv: kv[1][field]), reverse=True)
        elif field is not None:
            items.sort(key=lambda kv: kv[1][field])
        got = [(kv.key, (kv.value, kv.create_revision, kv.mod_revision, kv.version)) for kv in resp.kvs]
        if field is not None:  # ties in the sort target may come in any order: compare the multiset
            assert sorted(got) == sorted(items[: limit or None]) or len(items) > (limit or len(items))
            assert [g[1][field] for g in got] == [i[1][field] for i in items[: limit or None]]
        else:
            assert got == items[: limit or None]
        assert resp.count == total
        assert resp.more == (0 < limit < len(items))
        assert resp.header.revision == m.rev

    @invariant()
    def every_retained_revision_reads_like_the_model(self) -> None:
        m = self.model
        assert self.store.current_rev == m.rev
        assert self.store.compact_main_rev == m.compacted
        for rev in range(max(m.compacted, 1), m.rev + 1):
            rr = self.store.range(b"\x00", b"", rev=rev)
            got = {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in rr.kvs}
            assert got == m.states[rev], f"at revision {rev}"
            assert rr.count == len(m.states[rev])

    @invariant()
    def history_from_the_compacted_revision_is_whole(self) -> None:
        m = self.model
        records, _ = read_events(self.backend, max(m.compacted, 1), m.rev + 1, 1 << 30, lambda key: True)
        got: dict[int, list[tuple[int, bytes, bytes]]] = {}
        for rec in records:
            got.setdefault(rec.rev, []).append((rec.kind, rec.kv.key, rec.kv.value))
        assert {r: sorted(evs) for r, evs in got.items()} == m.events

    @precondition(lambda self: self.model.compacted > 0)
    @invariant()
    def below_compaction_is_refused(self) -> None:
        if self.model.compacted > 1:
            try:
                self.store.range(b"a", None, rev=self.model.compacted - 1)
            except CompactedError:
                return
            raise AssertionError("read below the compacted revision succeeded")


MVCCMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestMVCCModel = MVCCMachine.TestCase
