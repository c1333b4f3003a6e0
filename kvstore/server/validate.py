"""Request checks made before anything is proposed, with etcd's errors and in etcd's order."""

from __future__ import annotations

from kvstore.errors import DuplicateKey, EmptyKey, KeyNotFound, LeaseProvided, TooManyOps, ValueProvided
from proto.etcdserverpb import rpc_pb2 as pb


def check_range(r: pb.RangeRequest) -> None:
    if not r.key:
        raise EmptyKey()


def check_put(r: pb.PutRequest) -> None:
    if not r.key:
        raise EmptyKey()
    if r.ignore_value and r.value:
        raise ValueProvided()
    if r.ignore_lease and r.lease:
        raise LeaseProvided()


def check_delete(r: pb.DeleteRangeRequest) -> None:
    if not r.key:
        raise EmptyKey()


def check_txn(r: pb.TxnRequest, max_txn_ops: int) -> None:
    """Shape checks of a txn and its nested txns, then etcd's duplicate-key rule per branch."""
    _check_txn_shape(r, max_txn_ops)
    check_intervals(r.success)
    check_intervals(r.failure)


def _check_txn_shape(r: pb.TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise TooManyOps()
    for c in r.compare:
        if not c.key:
            raise EmptyKey()
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            check_range(op.request_range)
        elif kind == "request_put":
            check_put(op.request_put)
        elif kind == "request_delete_range":
            check_delete(op.request_delete_range)
        elif kind == "request_txn":
            _check_txn_shape(op.request_txn, max_txn_ops - opc)
        else:
            raise KeyNotFound()  # an empty RequestOp: etcd answers "key not found"


class _Deletes:
    """Deleted intervals of a branch; etcd treats a range_end of ``\\0`` literally here."""

    __slots__ = ("intervals",)

    def __init__(self) -> None:
        self.intervals: list[tuple[bytes, bytes]] = []

    def add(self, key: bytes, end: bytes) -> None:
        self.intervals.append((key, end if end else key + b"\x00"))

    def covers(self, key: bytes) -> bool:
        return any(begin <= key < end for begin, end in self.intervals)


def check_intervals(ops: list[pb.RequestOp]) -> tuple[set[bytes], _Deletes]:
    """etcd's rule: within one branch (nested txns included) a key may be written only once.

    A put may not repeat a put of the same key, nor fall in a deleted range; the two branches of
    a nested txn may put the same key, since only one of them runs.
    """
    dels = _Deletes()
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.add(d.key, d.range_end)
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = check_intervals(op.request_txn.success)
        puts_else, dels_else = check_intervals(op.request_txn.failure)
        for k in puts_then:
            if k in puts or dels.covers(k):
                raise DuplicateKey()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or dels.covers(k):
                raise DuplicateKey()
            puts.add(k)
        dels.intervals.extend(dels_then.intervals)
        dels.intervals.extend(dels_else.intervals)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or dels.covers(k):
            raise DuplicateKey()
        puts.add(k)
    return puts, dels
