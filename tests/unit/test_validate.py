"""Request checks: etcd's errors, their order, and the duplicate-key rule of txns."""

from __future__ import annotations

import pytest

from kvstore.errors import DuplicateKey, EmptyKey, KeyNotFound, LeaseProvided, TooManyOps, ValueProvided
from kvstore.server.validate import check_put, check_txn
from proto.etcdserverpb import rpc_pb2 as pb


def put(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"v"))


def delete(key: bytes, end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end))


def txn(success: list | None = None, failure: list | None = None, compare: list | None = None) -> pb.RequestOp:
    return pb.RequestOp(request_txn=pb.TxnRequest(compare=compare or [], success=success or [], failure=failure or []))


def test_put_checks() -> None:
    with pytest.raises(EmptyKey):
        check_put(pb.PutRequest(value=b"x"))
    with pytest.raises(ValueProvided):
        check_put(pb.PutRequest(key=b"k", value=b"x", ignore_value=True))
    with pytest.raises(LeaseProvided):
        check_put(pb.PutRequest(key=b"k", lease=5, ignore_lease=True))


@pytest.mark.parametrize(
    "success",
    [
        [put(b"a"), put(b"a")],
        [put(b"a"), delete(b"a")],
        [delete(b"a", b"c"), put(b"b")],
        [put(b"a"), txn([put(b"a")])],
        [txn([put(b"a")]), txn(failure=[put(b"a")])],
        [delete(b"a"), txn([put(b"a")])],
    ],
)
def test_duplicate_keys_are_refused(success: list) -> None:
    with pytest.raises(DuplicateKey):
        check_txn(pb.TxnRequest(success=success), 128)


@pytest.mark.parametrize(
    "success",
    [
        [put(b"a"), put(b"b")],
        [delete(b"a"), delete(b"a")],  # deleting twice is allowed
        [put(b"c"), delete(b"a", b"c")],  # the range end is exclusive
        [txn([put(b"a")], [put(b"a")])],  # only one branch of a nested txn runs
        [put(b"z"), delete(b"a", b"\x00")],  # etcd reads a "\0" end literally here, so it covers nothing
    ],
)
def test_allowed_txns(success: list) -> None:
    check_txn(pb.TxnRequest(success=success), 128)


def test_success_and_failure_branches_are_checked_apart() -> None:
    check_txn(pb.TxnRequest(success=[put(b"a")], failure=[put(b"a")]), 128)


def test_too_many_ops_counts_the_largest_part() -> None:
    check_txn(pb.TxnRequest(success=[put(bytes([i])) for i in range(1, 129)]), 128)
    with pytest.raises(TooManyOps):
        check_txn(pb.TxnRequest(success=[put(bytes([i % 250 + 1, i // 250])) for i in range(129)]), 128)
    with pytest.raises(TooManyOps):  # nested txns share the budget
        check_txn(pb.TxnRequest(success=[put(b"a"), txn([put(b"b"), put(b"c")])]), 3)


def test_empty_keys_and_empty_ops() -> None:
    with pytest.raises(EmptyKey):
        check_txn(pb.TxnRequest(compare=[pb.Compare()]), 128)
    with pytest.raises(EmptyKey):
        check_txn(pb.TxnRequest(success=[put(b"")]), 128)
    with pytest.raises(KeyNotFound):
        check_txn(pb.TxnRequest(success=[pb.RequestOp()]), 128)
