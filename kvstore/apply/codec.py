"""The encoding of client requests as log entry data.

An entry's data is a msgpack array ``[op, request_id, body]``: ``op`` says which request it is,
``request_id`` lets the member that proposed it find the waiting client when it is applied, and
``body`` is the serialized etcd request message. Empty data is a Raft no-op and applies nothing.

A client's request carries who sent it: ``[op, request_id, body, username, auth_revision]``
(``""`` and 0 without credentials), which the applier checks permissions against when auth is
enabled, as etcd carries them in its request header. A request the member makes itself (lease
expiry, checkpoints, its own attributes) has no such fields and is not checked.
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
    # auth: the body is etcd's request message, but for AUTHENTICATE (msgpack [name, token prefix])
    AUTH_ENABLE = 20
    AUTH_DISABLE = 21
    AUTHENTICATE = 22
    USER_ADD = 23
    USER_DELETE = 24
    USER_CHANGE_PASSWORD = 25
    USER_GRANT_ROLE = 26
    USER_REVOKE_ROLE = 27
    ROLE_ADD = 28
    ROLE_GRANT_PERMISSION = 29
    ROLE_REVOKE_PERMISSION = 30
    ROLE_DELETE = 31


# the AuthStore.apply kind of each auth op
AUTH_OPS: dict[int, str] = {
    Op.AUTH_ENABLE: "auth_enable",
    Op.AUTH_DISABLE: "auth_disable",
    Op.AUTHENTICATE: "authenticate",
    Op.USER_ADD: "user_add",
    Op.USER_DELETE: "user_delete",
    Op.USER_CHANGE_PASSWORD: "user_change_password",
    Op.USER_GRANT_ROLE: "user_grant_role",
    Op.USER_REVOKE_ROLE: "user_revoke_role",
    Op.ROLE_ADD: "role_add",
    Op.ROLE_GRANT_PERMISSION: "role_grant_permission",
    Op.ROLE_REVOKE_PERMISSION: "role_revoke_permission",
    Op.ROLE_DELETE: "role_delete",
}


_packb = msgpack.packb
_unpackb = msgpack.unpackb


def encode_request(op: Op, request_id: int, body: bytes, auth: tuple[str, int] | None = None) -> bytes:
    if auth is None:
        return _packb((int(op), request_id, body))
    return _packb((int(op), request_id, body, auth[0], auth[1]))


class MalformedEntry(ValueError):
    """Entry data that is not a request this version understands (a bug or corruption)."""


def decode_request(data: bytes) -> tuple[int, int, bytes, tuple[str, int] | None]:
    """(op, request id, body, (username, auth revision) or None for the member's own requests)."""
    try:
        fields = _unpackb(data)
    except Exception as exc:
        raise MalformedEntry(f"undecodable entry data ({len(data)} bytes): {exc}") from exc
    if type(fields) is not list or len(fields) not in (3, 5):
        raise MalformedEntry(f"entry data of the wrong shape: {type(fields).__name__}")
    op, request_id, body = fields[0], fields[1], fields[2]
    if not isinstance(op, int) or not isinstance(request_id, int) or not isinstance(body, bytes):
        raise MalformedEntry(f"entry data of the wrong shape: {type(op)}, {type(request_id)}, {type(body)}")
    if len(fields) == 3:
        return op, request_id, body, None
    user, revision = fields[3], fields[4]
    if not isinstance(user, str) or type(revision) is not int:
        raise MalformedEntry(f"entry credentials of the wrong shape: {type(user)}, {type(revision)}")
    return op, request_id, body, (user, revision)
