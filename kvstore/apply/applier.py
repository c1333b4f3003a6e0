"""Applies committed log entries to the store, in log order, deterministically.

Every member runs every committed entry through ``Applier.apply``; the same log gives the same
store, revisions and responses everywhere, and again on replay after a restart. A batch of
entries is applied in one backend transaction that also records the index and term of the
last entry, so the backend always holds exactly a prefix of the log.

An error that etcd answers for a request (a missing lease, a compacted revision in a txn, ...)
is a result like any other: it is returned to the waiting client and changes nothing. Any other
exception is a bug that leaves the in-memory index ahead of the backend; it propagates and the
member must stop.

Alarms change what applies, as etcd's capped and corrupt appliers do: while NOSPACE is raised,
puts (alone or in a txn) and lease grants fail with ``NoSpace`` (deletes, compactions and the rest
go on); while CORRUPT is raised, every write, compaction and lease grant or revoke fails with
``Corrupt``. Membership changes are validated here (``kvstore.membership``), so every member
accepts or rejects each one alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgpack

from kvstore.alarms import CORRUPT, NOSPACE, AlarmStore
from kvstore.apply.codec import Op, decode_request
from kvstore.apply.kv import do_delete_range, do_put, do_txn
from kvstore.errors import Corrupt, EtcdError, LeaseNotFound, NoSpace
from kvstore.lease import Lessor, apply_lease_checkpoint, apply_lease_grant, apply_lease_revoke
from kvstore.membership import ChangeContext, MemberInfo, Membership
from kvstore.mvcc.store import CompactionJob, KVStore, WriteTxn
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import KeyValue

# (revision, [(event type, KeyValue)]) for each revision a batch created, in order
ChangeSink = Callable[[list[tuple[int, list[tuple[int, KeyValue]]]]], None]


@dataclass(slots=True)
class CompactResult:
    response: pb.CompactionResponse
    job: CompactionJob


ApplyResult = object  # a response message, a CompactResult, or an EtcdError

_CORRUPT_REFUSES = frozenset({Op.PUT, Op.DELETE_RANGE, Op.TXN, Op.COMPACT, Op.LEASE_GRANT, Op.LEASE_REVOKE})


def txn_puts(t: pb.TxnRequest) -> bool:
    """Whether a txn would cost quota (etcd's costTxn > 0): a put in either branch (not nested)."""
    return any(op.WhichOneof("request") == "request_put" for op in (*t.success, *t.failure))


@dataclass(slots=True)
class ConfChangeResult:
    """What the proposer of a membership change learns: the members after it, or etcd's error."""

    members: list[MemberInfo]
    error: EtcdError | None = None


class Applier:
    def __init__(self, store: KVStore, leases: Lessor | None = None, on_changes: ChangeSink | None = None) -> None:
        self.store = store
        self.leases = leases
        self.on_changes = on_changes
        backend = store.backend
        self.membership = Membership(backend)
        self.alarms = AlarmStore(backend)
        self.applied_index, self.applied_term = backend.consistent_index()

    def apply_conf_change(
        self, index: int, term: int, kind: str, member_id: int, ctx: ChangeContext, known: MemberInfo | None
    ) -> tuple[bool, ConfChangeResult | None]:
        """Applies a committed membership change entry ("add", "add_learner", "remove", "update").

        Returns whether it takes effect on the Raft configuration, and what its proposer learns
        (None for an entry applied before, replayed: then whether the membership reflects it).
        known describes the member when the entry carries no context (the first entries of a
        cluster bootstrapped before entries carried contexts).
        """
        membership = self.membership
        if index <= self.applied_index:
            return membership.reflects(kind, member_id, ctx), None
        error = membership.check(kind, member_id, ctx)
        backend = self.store.backend
        with backend.begin_write() as txn:
            if error is None:
                membership.apply(txn, kind, member_id, ctx, known)
            backend.put_meta(txn, b"consistent_index", index)
            backend.put_meta(txn, b"term", term)
        self.applied_index, self.applied_term = index, term
        members = [
            MemberInfo(m.id, m.name, list(m.peer_urls), list(m.client_urls), m.is_learner)
            for m in membership.sorted_members()
        ]
        return error is None and kind != "update", ConfChangeResult(members, error)

    def apply(self, entries: Sequence[tuple[int, int, bytes]]) -> list[tuple[int, ApplyResult]]:
        """Applies (index, term, data) entries; returns (request id, result) per request entry.

        Entries at or below the applied index were applied before (replay after restart) and
        are skipped.
        """
        store = self.store
        backend = store.backend
        results: list[tuple[int, ApplyResult]] = []
        changes: list[tuple[int, list[tuple[int, KeyValue]]]] = []
        txn = backend.begin_write()
        try:
            last_index, last_term = self.applied_index, self.applied_term
            for index, term, data in entries:
                if index <= last_index:
                    continue
                last_index, last_term = index, term
                if not data:
                    continue
                op, request_id, body = decode_request(data)
                results.append((request_id, self._apply_one(txn, op, body, changes)))
            if last_index != self.applied_index:
                backend.put_meta(txn, b"consistent_index", last_index)
                backend.put_meta(txn, b"term", last_term)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        self.applied_index, self.applied_term = last_index, last_term
        if changes and self.on_changes is not None:
            self.on_changes(changes)
        return results

    def _apply_one(self, txn: object, op: int, body: bytes, changes: list) -> ApplyResult:
        store = self.store
        if op == Op.MEMBER_ATTRS:
            member_id, name, client_urls = msgpack.unpackb(body)
            self.membership.publish(txn, member_id, name, client_urls)
            return None
        if op == Op.ALARM:
            return self._apply_alarm(txn, pb.AlarmRequest.FromString(body))
        if self.alarms.any_raised:
            refused = self._refused(op, body)
            if refused is not None:
                return refused
        if op == Op.COMPACT:
            req = pb.CompactionRequest.FromString(body)
            try:
                job = store.compact(txn, req.revision)
            except EtcdError as exc:
                return exc
            resp = pb.CompactionResponse()
            resp.header.revision = store.current_rev
            return CompactResult(resp, job)
        w = store.write(txn)
        try:
            if op == Op.PUT:
                req = pb.PutRequest.FromString(body)
                if req.lease and (self.leases is None or not self.leases.exists(req.lease)):
                    raise LeaseNotFound()
                result: ApplyResult = do_put(w, req)
            elif op == Op.DELETE_RANGE:
                result = do_delete_range(w, pb.DeleteRangeRequest.FromString(body))
            elif op == Op.TXN:
                result = do_txn(w, pb.TxnRequest.FromString(body), self.leases, write=True)
            elif op == Op.LEASE_GRANT:
                result = apply_lease_grant(self._lessor(), w, body)
            elif op == Op.LEASE_REVOKE:
                result = apply_lease_revoke(self._lessor(), w, body)
            elif op == Op.LEASE_CHECKPOINT:
                result = apply_lease_checkpoint(self._lessor(), w, body)
            else:
                raise ValueError(f"unknown request op {op} in the log")
        except EtcdError as exc:
            if w.changes:  # etcd checks everything before writing; a partial write is a bug
                raise RuntimeError(f"request failed after changing the store: {exc!r}") from exc
            return exc
        _end(w, changes)
        return result

    def _refused(self, op: int, body: bytes) -> EtcdError | None:
        """What the raised alarms refuse (etcd's corrupt applier wraps the capped one: CORRUPT first)."""
        alarms = self.alarms
        if alarms.active(CORRUPT) and op in _CORRUPT_REFUSES:
            return Corrupt()
        if alarms.active(NOSPACE):
            if op == Op.PUT or op == Op.LEASE_GRANT:
                return NoSpace()
            if op == Op.TXN and txn_puts(pb.TxnRequest.FromString(body)):
                return NoSpace()
        return None

    def _apply_alarm(self, txn: object, req: pb.AlarmRequest) -> pb.AlarmResponse:
        """etcd's applierV3backend.Alarm: GET lists, ACTIVATE raises, DEACTIVATE clears."""
        resp = pb.AlarmResponse()
        alarms = self.alarms
        if req.action == pb.AlarmRequest.GET:
            resp.alarms.extend(alarms.get(req.alarm))
        elif req.action == pb.AlarmRequest.ACTIVATE:
            resp.alarms.append(alarms.activate(txn, req.memberID, req.alarm))  # NONE too, as etcd
        elif req.action == pb.AlarmRequest.DEACTIVATE:
            m = alarms.deactivate(txn, req.memberID, req.alarm)
            if m is not None:
                resp.alarms.append(m)
        return resp

    def _lessor(self) -> Lessor:
        if self.leases is None:
            raise RuntimeError("a lease request is in the log but this applier has no lessor")
        return self.leases


def _end(w: WriteTxn, changes: list) -> None:
    w.end()
    if w.changes:
        changes.append((w.begin_rev + 1, w.changes))
