"""The wire format of what members ask each other over the peer transport, and the asking side.

Requests are msgpack ``[method, argument]`` sent with ``raft.transport`` requests; answers are
msgpack ``[True, value]`` or ``[False, error class, message]`` (an etcd error, re-raised as the
same ``kvstore.errors`` class on the asking side). ``kvstore.server.peer_requests`` answers them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgpack

from kvstore import errors
from kvstore.config import peer_address
from kvstore.errors import EtcdError, StartupError
from kvstore.membership import MemberInfo
from raft.api import ReplicatedLog
from raft.transport import ClientSSL, PeerRequestError, ask

MEMBERS = "members"
HASHKV = "hashkv"
PROMOTE = "promote"


@runtime_checkable
class PeerRequester(Protocol):
    """A log that can ask its peers (``raft.node.RaftNode.request``)."""

    async def request(
        self, payload: bytes, *, peer: int | None = None, address: str | None = None, timeout: float = 5.0
    ) -> bytes: ...


class Asker(Protocol):
    """What asking a peer needs of a member: its log."""

    log: ReplicatedLog


def ok(value: Any) -> bytes:
    return msgpack.packb([True, value])


def error(exc: EtcdError) -> bytes:
    return msgpack.packb([False, type(exc).__name__, exc.message])


def result(raw: bytes) -> Any:
    """The value of an answer, or the etcd error it carries raised."""
    try:
        answer = msgpack.unpackb(raw)
        if answer[0]:
            return answer[1]
        _, name, message = answer
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise PeerRequestError(f"undecodable answer: {exc}") from None
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, EtcdError):
        raise cls(message)
    raise EtcdError(message)


def members_wire(members: list[MemberInfo]) -> list[list[Any]]:
    return [[m.id, m.name, m.peer_urls, m.client_urls, m.is_learner] for m in members]


def members_from_wire(wire: list[list[Any]]) -> list[MemberInfo]:
    return [MemberInfo(int(i), str(n), list(p), list(c), bool(lr)) for i, n, p, c, lr in wire]


def _requester(member: Asker) -> PeerRequester:
    log = member.log
    if not isinstance(log, PeerRequester):
        raise PeerRequestError("this member's log cannot ask its peers")
    return log


async def ask_hash_kv(member: Asker, peer: int, revision: int) -> tuple[int, int, int]:
    """A peer's (hash, current revision, compact revision); EtcdError as it answered, OSError if unreachable."""
    try:
        raw = await _requester(member).request(msgpack.packb([HASHKV, revision]), peer=peer)
    except PeerRequestError as exc:
        raise OSError(str(exc)) from None
    h, rev, crev = result(raw)
    return int(h), int(rev), int(crev)


async def ask_promote(member: Asker, leader: int, member_id: int) -> list[MemberInfo]:
    raw = await _requester(member).request(msgpack.packb([PROMOTE, member_id]), peer=leader)
    return members_from_wire(result(raw))


async def fetch_cluster(
    addresses: list[str], timeout: float, client_ssl: ClientSSL = None
) -> tuple[int, list[MemberInfo], set[int]]:
    """(cluster id, members, removed ids) from the first member at addresses that answers (etcd's
    GetClusterFromRemotePeers; dialled with the peer TLS of client_ssl when given); PeerRequestError
    naming every failure when none does."""
    problems = []
    for address in addresses:
        try:
            # peer URLs (https:// with peer TLS) or host:port
            where = peer_address(address) if "://" in address else address
            value = result(await ask(where, msgpack.packb([MEMBERS, None]), timeout, client_ssl))
            cluster_id, wire, removed = value
            return int(cluster_id), members_from_wire(wire), {int(i) for i in removed}
        except (PeerRequestError, EtcdError, StartupError, ValueError, TypeError) as exc:
            problems.append(f"{address}: {exc}")
    raise PeerRequestError("; ".join(problems) or "no peer URLs to ask")
