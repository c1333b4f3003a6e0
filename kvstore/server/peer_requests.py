"""What members ask each other over the peer transport (what etcd's peer HTTP API answers).

Requests are msgpack ``[method, argument]`` sent with ``raft.transport`` requests; answers are
msgpack ``[True, value]`` or ``[False, error class, message]`` (an etcd error, re-raised as the
same ``kvstore.errors`` class on the asking side).

- ``members`` (etcd's ``GET /members``): the cluster id, the members and the removed ids; the only
  request a member that does not know the cluster yet may make (``fetch_cluster``, used by a new
  member started with ``--initial-cluster-state existing``).
- ``hashkv`` (etcd's ``/members/hashkv``): this member's HashKV at a revision, for the corruption
  checks (``kvstore.corrupt``).
- ``promote`` (etcd's ``/members/promote``): a follower hands a MemberPromote to the leader, the one
  member that knows whether the learner has caught up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from kvstore import errors
from kvstore.config import peer_address
from kvstore.errors import EtcdError, StartupError
from kvstore.membership import MemberInfo
from kvstore.snapshot.maintenance import hash_kv
from raft.transport import ClientSSL, PeerRequestError, ask

if TYPE_CHECKING:
    from kvstore.server.member import Member

MEMBERS = "members"
HASHKV = "hashkv"
PROMOTE = "promote"


def _ok(value: Any) -> bytes:
    return msgpack.packb([True, value])


def _error(exc: EtcdError) -> bytes:
    return msgpack.packb([False, type(exc).__name__, exc.message])


def _result(raw: bytes) -> Any:
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


async def handle(member: Member, peer: int, body: bytes) -> bytes:
    """Answers one request of peer (0: a member that does not know the cluster yet)."""
    try:
        method, arg = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PeerRequestError(f"undecodable request: {exc}") from None
    if method == MEMBERS:
        membership = member.applier.membership
        return _ok([member.cluster_id, members_wire(membership.sorted_members()), sorted(membership.removed)])
    if peer == 0:
        raise PeerRequestError("a member that is not part of the cluster may only ask for its members")
    try:
        if method == HASHKV:
            return _ok(list(await hash_kv(member, int(arg))))
        if method == PROMOTE:
            from kvstore.server.reconfig import promote_here

            return _ok(members_wire(await promote_here(member, int(arg))))
    except EtcdError as exc:
        return _error(exc)
    raise PeerRequestError(f"unknown request {method!r}")


async def ask_hash_kv(member: Member, peer: int, revision: int) -> tuple[int, int, int]:
    """A peer's (hash, current revision, compact revision); EtcdError as it answered, OSError if unreachable."""
    try:
        raw = await member.log.request(msgpack.packb([HASHKV, revision]), peer=peer)  # type: ignore[attr-defined]
    except PeerRequestError as exc:
        raise OSError(str(exc)) from None
    h, rev, crev = _result(raw)
    return int(h), int(rev), int(crev)


async def ask_promote(member: Member, leader: int, member_id: int) -> list[MemberInfo]:
    raw = await member.log.request(msgpack.packb([PROMOTE, member_id]), peer=leader)  # type: ignore[attr-defined]
    return members_from_wire(_result(raw))


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
            value = _result(await ask(where, msgpack.packb([MEMBERS, None]), timeout, client_ssl))
            cluster_id, wire, removed = value
            return int(cluster_id), members_from_wire(wire), {int(i) for i in removed}
        except (PeerRequestError, EtcdError, StartupError, ValueError, TypeError) as exc:
            problems.append(f"{address}: {exc}")
    raise PeerRequestError("; ".join(problems) or "no peer URLs to ask")
