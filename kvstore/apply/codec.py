"""The encoding of client requests as log entry data.

An entry's data is a msgpack array ``[op, request_id, body]``: ``op`` says which request it is,
``request_id`` lets the member that proposed it find the waiting client when it is applied, and
``body`` is the serialized etcd request message. Empty data is a Raft no-op and applies nothing.
"""

from __future__ import annotations

from enum import IntEnum

import msgpack


class Op(IntEnum):
    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACT = 4
    LEASE_GRANT = 5
    LEASE_REVOKE = 6
    LEASE_CHECKPOINT = 7
    ALARM = 8
    MEMBER_ATTRS = 9  # body: msgpack [member id, name, client urls]


_packb = msgpack.packb
_unpackb = msgpack.unpackb


def encode_request(op: Op, request_id: int, body: bytes) -> bytes:
    return _packb((int(op), request_id, body))


class MalformedEntry(ValueError):
    """Entry data that is not a request this version understands (a bug or corruption)."""


def decode_request(data: bytes) -> tuple[int, int, bytes]:
    try:
        op, request_id, body = _unpackb(data)
    except Exception as exc:
        raise MalformedEntry(f"undecodable entry data ({len(data)} bytes): {exc}") from exc
    if not isinstance(op, int) or not isinstance(request_id, int) or not isinstance(body, bytes):
        raise MalformedEntry(f"entry data of the wrong shape: {type(op)}, {type(request_id)}, {type(body)}")
    return op, request_id, body
