"""etcd's KV request semantics over a store view: Range, Put, DeleteRange and Txn.

These functions are shared by the applier (writes, in log order) and by the read path
(Range and read-only Txn served locally after a read barrier), so both answer exactly alike.
Response headers built here carry only the revision, as etcd's do; the gRPC layer fills in
cluster, member and term on the outermost response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from kvstore.errors import KeyNotFound
from kvstore.lease.errors import LeaseNotFoundError
from kvstore.mvcc.errors import CompactedError, FutureRevError
from kvstore.mvcc.store import RangeResult, WriteTxn
from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb.kv_pb2 import KeyValue

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

_NONE = pb.RangeRequest.NONE
_ASCEND = pb.RangeRequest.ASCEND
_DESCEND = pb.RangeRequest.DESCEND
_SORT_KEYS: dict[int, Callable[[KeyValue], SupportsRichComparison]] = {
    pb.RangeRequest.KEY: lambda kv: kv.key,
    pb.RangeRequest.VERSION: lambda kv: kv.version,
    pb.RangeRequest.CREATE: lambda kv: kv.create_revision,
    pb.RangeRequest.MOD: lambda kv: kv.mod_revision,
    pb.RangeRequest.VALUE: lambda kv: kv.value,
}


class View(Protocol):
    def rev(self) -> int: ...

    def first_rev(self) -> int: ...

    def range(
        self, key: bytes, end: bytes | None, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult: ...


class LeaseLookup(Protocol):
    def exists(self, lease_id: int) -> bool: ...


def range_end(raw: bytes) -> bytes | None:
    """etcd's range_end convention: empty = the key alone, ``\\0`` = every key >= key."""
    if not raw:
        return None
    if raw == b"\x00":
        return b""
    return raw


def do_range(view: View, r: pb.RangeRequest) -> pb.RangeResponse:
    limit = r.limit
    filtered = r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision
    if r.sort_order != _NONE or filtered:
        limit = 0  # the whole range is needed to sort or filter before limiting
    if limit > 0:
        limit += 1  # one more than asked tells whether there are more
    rr = view.range(r.key, range_end(r.range_end), r.revision, limit, r.count_only)
    kvs = rr.kvs
    if filtered:
        if r.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= r.max_mod_revision]
        if r.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
        if r.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
        if r.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= r.min_create_revision]
    order = r.sort_order
    if r.sort_target != pb.RangeRequest.KEY and order == _NONE:
        order = _ASCEND  # etcd sorts ascending by default when a target other than the key is given
    if order == _DESCEND:
        kvs = sorted(kvs, key=_SORT_KEYS[r.sort_target], reverse=True)
    elif order == _ASCEND and r.sort_target != pb.RangeRequest.KEY:
        kvs = sorted(kvs, key=_SORT_KEYS[r.sort_target])
    resp = pb.RangeResponse()
    if 0 < r.limit < len(kvs):
        kvs = kvs[: r.limit]
        resp.more = True
    resp.header.revision = rr.rev
    resp.count = rr.count
    if r.keys_only:
        for kv in kvs:
            kv.value = b""
    resp.kvs.extend(kvs)
    return resp


def do_put(txn: WriteTxn, p: pb.PutRequest) -> pb.PutResponse:
    """Applies a Put in txn; lease existence is checked by the caller before txn changes anything."""
    value, lease = p.value, p.lease
    prev = None
    if p.ignore_value or p.ignore_lease or p.prev_kv:
        rr = txn.range(p.key, None)
        if rr.kvs:
            prev = rr.kvs[0]
    if p.ignore_value or p.ignore_lease:
        if prev is None:
            raise KeyNotFound()
        if p.ignore_value:
            value = prev.value
        if p.ignore_lease:
            lease = prev.lease
    resp = pb.PutResponse()
    if p.prev_kv and prev is not None:
        resp.prev_kv.CopyFrom(prev)
    resp.header.revision = txn.put(p.key, value, lease)
    return resp


def do_delete_range(txn: WriteTxn, d: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
    resp = pb.DeleteRangeResponse()
    end = range_end(d.range_end)
    if d.prev_kv:
        resp.prev_kvs.extend(txn.range(d.key, end).kvs)
    resp.deleted, resp.header.revision = txn.delete_range(d.key, end)
    return resp


# ---- Txn ----


def is_txn_readonly(t: pb.TxnRequest) -> bool:
    return all(op.WhichOneof("request") == "request_range" for op in (*t.success, *t.failure))


def is_txn_serializable(t: pb.TxnRequest) -> bool:
    return all(
        op.WhichOneof("request") == "request_range" and op.request_range.serializable for op in (*t.success, *t.failure)
    )


def _compare_kv(c: pb.Compare, kv: KeyValue) -> bool:
    target = c.target
    if target == pb.Compare.VALUE:
        return _holds(c.result, kv.value, c.value)
    if target == pb.Compare.CREATE:
        return _holds(c.result, kv.create_revision, c.create_revision)
    if target == pb.Compare.MOD:
        return _holds(c.result, kv.mod_revision, c.mod_revision)
    if target == pb.Compare.VERSION:
        return _holds(c.result, kv.version, c.version)
    if target == pb.Compare.LEASE:
        return _holds(c.result, kv.lease, c.lease)
    return True


_Compared = TypeVar("_Compared", bytes, int)


def _holds(result: int, a: _Compared, b: _Compared) -> bool:
    """Whether ``a <result> b`` (a compare's result: equal, not equal, greater, less)."""
    if result == pb.Compare.EQUAL:
        return a == b
    if result == pb.Compare.NOT_EQUAL:
        return a != b
    if result == pb.Compare.GREATER:
        return a > b
    if result == pb.Compare.LESS:
        return a < b
    return True


def _compare(view: View, c: pb.Compare) -> bool:
    try:
        rr = view.range(c.key, range_end(c.range_end))
    except (CompactedError, FutureRevError):
        return False
    if not rr.kvs:
        if c.target == pb.Compare.VALUE:
            return False  # a missing key has no value to compare
        return _compare_kv(c, _ABSENT)
    return all(_compare_kv(c, kv) for kv in rr.kvs)


_ABSENT = KeyValue()


def _path(view: View, t: pb.TxnRequest) -> list[bool]:
    """Which branch each (nested) txn takes, in the order ops are visited, all against view."""
    ok = all(_compare(view, c) for c in t.compare)
    path = [ok]
    for op in t.success if ok else t.failure:
        if op.WhichOneof("request") == "request_txn":
            path.extend(_path(view, op.request_txn))
    return path


def _ops_on_path(t: pb.TxnRequest, path: list[bool], pos: int, out: list[pb.RequestOp]) -> int:
    """Collects the non-txn ops the path visits, in order; returns the next path position."""
    ops = t.success if path[pos] else t.failure
    pos += 1
    for op in ops:
        if op.WhichOneof("request") == "request_txn":
            pos = _ops_on_path(op.request_txn, path, pos, out)
        else:
            out.append(op)
    return pos


def _check(view: View, ops: list[pb.RequestOp], leases: LeaseLookup | None, write: bool) -> None:
    """Raises the error etcd gives before applying anything: puts are checked first, then ranges."""
    if write:
        for op in ops:
            if op.WhichOneof("request") != "request_put":
                continue
            p = op.request_put
            if (p.ignore_value or p.ignore_lease) and not view.range(p.key, None).kvs:
                raise KeyNotFound()
            if p.lease and (leases is None or not leases.exists(p.lease)):
                raise LeaseNotFoundError()
    for op in ops:
        if op.WhichOneof("request") != "request_range":
            continue
        rev = op.request_range.revision
        if rev > view.rev():
            raise FutureRevError()
        if 0 < rev < view.first_rev():
            raise CompactedError()


def _apply(txn: View, t: pb.TxnRequest, path: list[bool], pos: int, resp: pb.TxnResponse) -> int:
    ok = path[pos]
    pos += 1
    resp.succeeded = ok
    for op in t.success if ok else t.failure:
        kind = op.WhichOneof("request")
        out = resp.responses.add()
        if kind == "request_range":
            out.response_range.CopyFrom(do_range(txn, op.request_range))
        elif kind == "request_put":
            out.response_put.CopyFrom(do_put(_writing(txn), op.request_put))
        elif kind == "request_delete_range":
            out.response_delete_range.CopyFrom(do_delete_range(_writing(txn), op.request_delete_range))
        elif kind == "request_txn":
            nested = out.response_txn
            nested.header.SetInParent()
            pos = _apply(txn, op.request_txn, path, pos, nested)
    return pos


def _writing(view: View) -> WriteTxn:
    """view as the write it must be: a txn with puts or deletes is applied only in the log's write."""
    if not isinstance(view, WriteTxn):
        raise TypeError("a txn that writes was applied to a read-only view")
    return view


def do_txn(view: View, t: pb.TxnRequest, leases: LeaseLookup | None, write: bool) -> pb.TxnResponse:
    """Evaluates and applies t against view (a WriteTxn when write, else a read-only view)."""
    path = _path(view, t)
    ops: list[pb.RequestOp] = []
    _ops_on_path(t, path, 0, ops)
    _check(view, ops, leases, write)
    resp = pb.TxnResponse()
    _apply(view, t, path, 0, resp)
    resp.header.revision = view.rev()
    return resp
