"""The requests the recipes send, as clientv3's options build them (WithFirstCreate, WithLastCreate, ...)."""

from __future__ import annotations

from proto.etcdserverpb import rpc_pb2 as pb

_CREATE = pb.RangeRequest.CREATE
_ASCEND = pb.RangeRequest.ASCEND
_DESCEND = pb.RangeRequest.DESCEND


def prefix_end(prefix: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: the prefix with its last byte below 0xff incremented; ``\\0`` if none."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\x00"


def owner_key(prefix: bytes, lease: int) -> bytes:
    """A session's key under a lock or election prefix: the lease id in hex (Go's %x)."""
    return prefix + format(lease, "x").encode()


def first_created(prefix: bytes) -> pb.RangeRequest:
    """The key under prefix created first (the lock's holder, the election's leader)."""
    return pb.RangeRequest(key=prefix, range_end=prefix_end(prefix), sort_order=_ASCEND, sort_target=_CREATE, limit=1)


def last_created_before(prefix: bytes, max_create_rev: int) -> pb.RangeRequest:
    """The key under prefix created last at or before max_create_rev (the one just ahead of ours)."""
    return pb.RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_order=_DESCEND,
        sort_target=_CREATE,
        limit=1,
        max_create_revision=max_create_rev,
    )


def if_created(key: bytes, create_rev: int) -> pb.Compare:
    return pb.Compare(key=key, target=pb.Compare.CREATE, result=pb.Compare.EQUAL, create_revision=create_rev)


def op_put(key: bytes, value: bytes, lease: int) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))


def op_get(request: pb.RangeRequest) -> pb.RequestOp:
    return pb.RequestOp(request_range=request)


def op_delete(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))
