"""Applies committed log entries to the store, in log order, deterministically.

Every member runs every committed entry through ``Applier.apply``; the same log gives the same
store, revisions and responses everywhere, and again on replay after a restart. A batch of
entries is applied in one backend transaction that also records the index and term of the
last entry, so the backend always holds exactly a prefix of the log.

An error that etcd answers for a request (a missing lease, a compacted revision in a txn, a
permission denied, ...) is a result like any other: it is returned to the waiting client, as
etcd's error (the store's and the lessor's own errors mapped by ``kvstore.errors.as_etcd``), and
changes nothing. An entry that is not a request this version can read (undecodable, of an unknown
kind) changes nothing either and is logged: every member skips it alike, where crashing on it
would crash every member on every restart. Any other exception is a bug that leaves the in-memory
index ahead of the backend; it propagates and the member must stop.

With auth enabled, a client's request is checked here, against the auth state at its place in
the log and with the identity it carries (``kvstore.apply.codec``), as etcd's auth applier does:
Put, DeleteRange, Txn (every compare and operation, nested ones included), LeaseRevoke (every
attached key), and the auth requests themselves (admin only, but Authenticate). Compaction, and
revoking a lease that holds no key, which etcd lets anyone do, need a user (any): an anonymous
client can neither discard history nor end other clients' sessions.

Alarms change what applies, as etcd's capped and corrupt appliers do: while NOSPACE is raised,
puts (alone or in a txn) and lease grants fail with ``NoSpace`` (deletes, compactions and the rest
go on); while CORRUPT is raised, every write, compaction and lease grant or revoke fails with
``Corrupt``. Membership changes are validated here (``kvstore.membership``), so every member
accepts or rejects each one alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import msgpack
from google.protobuf.message import DecodeError, Message

from kvstore.alarms import CORRUPT, NOSPACE, AlarmStore
from kvstore.apply.codec import AUTH_OPS, MalformedEntry, Op, decode_request
from kvstore.apply.kv import do_delete_range, do_put, do_txn
from kvstore.auth import AuthInfo, AuthStore
from kvstore.errors import ANSWERABLE, Corrupt, EtcdError, NoSpace, as_etcd
from kvstore.lease import Lessor, apply_lease_checkpoint, apply_lease_grant, apply_lease_revoke
from kvstore.lease.errors import LeaseNotFoundError
from kvstore.membership import ChangeContext, MemberInfo, Membership
from kvstore.mvcc.backend import Txn
from kvstore.mvcc.store import CompactionJob, KVStore, WriteTxn
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import KeyValue

# (revision, [(event type, KeyValue)]) for each revision a batch created, in order
Changes: TypeAlias = list[tuple[int, list[tuple[int, KeyValue]]]]
ChangeSink = Callable[[Changes], None]


@dataclass(slots=True)
class CompactResult:
    response: pb.CompactionResponse
    job: CompactionJob


log = logging.getLogger("raftkv.apply")

_CORRUPT_REFUSES = frozenset({Op.PUT, Op.DELETE_RANGE, Op.TXN, Op.COMPACT, Op.LEASE_GRANT, Op.LEASE_REVOKE})


def txn_puts(t: pb.TxnRequest) -> bool:
    """Whether a txn would cost quota (etcd's costTxn > 0): a put in either branch (not nested)."""
    return any(op.WhichOneof("request") == "request_put" for op in (*t.success, *t.failure))


ApplyResult: TypeAlias = "Message | CompactResult | EtcdError | None"
"""What a request entry's proposer gets: etcd's response, a compaction's result (its response and the
job that removes the history), etcd's error for a request that changed nothing, or None (a member's
own bookkeeping: published attributes)."""


_Response = TypeVar("_Response", bound=Message)


def response_as(result: object, cls: type[_Response]) -> _Response:
    """A proposal's result as the response its request gets (``Member.propose`` has raised the errors):
    a result of another type is a bug, raised as such."""
    if not isinstance(result, cls):
        raise TypeError(f"a proposal expecting {cls.__name__} got {type(result).__name__}")
    return result


@dataclass(slots=True)
class ConfChangeResult:
    """What the proposer of a membership change learns: the members after it, or etcd's error."""

    members: list[MemberInfo]
    error: EtcdError | None = None


class Applier:
    def __init__(
        self,
        store: KVStore,
        leases: Lessor | None = None,
        on_changes: ChangeSink | None = None,
        auth: AuthStore | None = None,
    ) -> None:
        self.store = store
        self.leases = leases
        self.on_changes = on_changes
        self.auth = auth if auth is not None else AuthStore(store.backend)
        backend = store.backend
        self.membership = Membership(backend)
        self.alarms = AlarmStore(backend)
        self.applied_index, self.applied_term = backend.consistent_index()

    def reload(self) -> None:
        """Reads membership, alarms and the applied index again (the store was restored in place from
        a snapshot; the store, the lessor and auth were reloaded first)."""
        backend = self.store.backend
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
        changes: Changes = []
        txn = backend.begin_write()
        try:
            last_index, last_term = self.applied_index, self.applied_term
            for index, term, data in entries:
                if index <= last_index:
                    continue
                last_index, last_term = index, term
                if not data:
                    continue
                try:
                    op, request_id, body, cred = decode_request(data)
                except MalformedEntry as exc:
                    log.error("skipped a log entry that is not a request", extra={"index": index, "error": str(exc)})
                    continue
                try:
                    result = self._apply_one(txn, index, op, body, cred, changes)
                except MalformedEntry as exc:
                    log.error("skipped a log entry that cannot be read", extra={"index": index, "error": repr(exc)})
                    continue
                results.append((request_id, result))
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

    def _apply_one(
        self, txn: Txn, index: int, op: int, body: bytes, cred: tuple[str, int] | None, changes: Changes
    ) -> ApplyResult:
        store = self.store
        auth = self.auth
        ai = AuthInfo(*cred) if cred is not None else None
        kind = AUTH_OPS.get(op)
        if kind is not None:
            try:
                return auth.apply(txn, kind, body, ai, index)
            except ANSWERABLE as exc:
                return as_etcd(exc)
            except (DecodeError, msgpack.UnpackException, ValueError) as exc:
                raise MalformedEntry(f"undecodable auth request: {exc}") from exc
        checked = auth.enabled and cred is not None
        if op == Op.MEMBER_ATTRS:
            try:
                member_id, name, client_urls = msgpack.unpackb(body)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise MalformedEntry(f"undecodable member attributes: {exc}") from exc
            self.membership.publish(txn, member_id, name, client_urls)
            return None
        # the alarms' appliers wrap etcd's auth applier: what an alarm refuses is refused before permissions
        try:
            if op == Op.ALARM:
                return self._apply_alarm(txn, pb.AlarmRequest.FromString(body))
            if self.alarms.any_raised:
                refused = self._refused(op, body)
                if refused is not None:
                    return refused
        except DecodeError as exc:
            raise MalformedEntry(f"undecodable request body: {exc}") from exc
        if op == Op.COMPACT:
            try:
                req = pb.CompactionRequest.FromString(body)
            except DecodeError as exc:
                raise MalformedEntry(f"undecodable compaction: {exc}") from exc
            if checked:
                try:
                    auth.check_user(ai)
                except ANSWERABLE as exc:
                    return as_etcd(exc)
            try:
                job = store.compact(txn, req.revision)
            except ANSWERABLE as exc:
                return as_etcd(exc)
            resp = pb.CompactionResponse()
            resp.header.revision = store.current_rev
            return CompactResult(resp, job)
        w = store.write(txn)
        try:
            result: Message
            if op == Op.PUT:
                put = pb.PutRequest.FromString(body)
                if checked:
                    auth.check_put(ai, put.key)
                    self._check_lease_keys(ai, put.lease)
                    if put.prev_kv:
                        auth.check_range(ai, put.key, b"")
                if put.lease and (self.leases is None or not self.leases.exists(put.lease)):
                    raise LeaseNotFoundError()
                result = do_put(w, put)
            elif op == Op.DELETE_RANGE:
                dreq = pb.DeleteRangeRequest.FromString(body)
                if checked:
                    auth.check_delete(ai, dreq.key, dreq.range_end)
                    if dreq.prev_kv:
                        auth.check_range(ai, dreq.key, dreq.range_end)
                result = do_delete_range(w, dreq)
            elif op == Op.TXN:
                treq = pb.TxnRequest.FromString(body)
                if checked:
                    auth.check_txn(ai, treq)
                result = do_txn(w, treq, self.leases, write=True)
            elif op == Op.LEASE_GRANT:
                result = apply_lease_grant(self._lessor(), w, body)
            elif op == Op.LEASE_REVOKE:
                if checked:
                    lease_id = pb.LeaseRevokeRequest.FromString(body).ID
                    if self.leases is not None and self.leases.exists(lease_id):
                        auth.check_user(ai)  # etcd lets anyone revoke a lease without keys; raftkv asks for a user
                    self._check_lease_keys(ai, lease_id)
                result = apply_lease_revoke(self._lessor(), w, body)
            elif op == Op.LEASE_CHECKPOINT:
                result = apply_lease_checkpoint(self._lessor(), w, body)
            else:
                raise MalformedEntry(f"unknown request op {op} in the log")
        except (DecodeError, msgpack.UnpackException) as exc:
            if w.changes:
                raise
            raise MalformedEntry(f"undecodable request body: {exc}") from exc
        except ANSWERABLE as exc:
            if w.changes:  # etcd checks everything before writing; a partial write is a bug
                raise RuntimeError(f"request failed after changing the store: {exc!r}") from exc
            return as_etcd(exc)
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

    def _apply_alarm(self, txn: Txn, req: pb.AlarmRequest) -> pb.AlarmResponse:
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

    def _check_lease_keys(self, ai: AuthInfo | None, lease_id: int) -> None:
        """Write permission on every key of a lease that a request attaches to or revokes (etcd's checkLeasePuts)."""
        lease = self.leases.lookup(lease_id) if self.leases is not None and lease_id else None
        if lease is not None:
            self.auth.check_lease_keys(ai, sorted(lease.keys))

    def _lessor(self) -> Lessor:
        if self.leases is None:
            raise RuntimeError("a lease request is in the log but this applier has no lessor")
        return self.leases


def _end(w: WriteTxn, changes: Changes) -> None:
    w.end()
    if w.changes:
        changes.append((w.begin_rev + 1, w.changes))
