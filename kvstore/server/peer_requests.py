"""What members ask each other over the peer transport (what etcd's peer HTTP API answers).

The wire format and the asking side are ``kvstore.server.peer_wire`` (re-exported here); this
module answers.

- ``members`` (etcd's ``GET /members``): the cluster id, the members and the removed ids; the only
  request a member that does not know the cluster yet may make (``fetch_cluster``, used by a new
  member started with ``--initial-cluster-state existing``).
- ``hashkv`` (etcd's ``/members/hashkv``): this member's HashKV at a revision, for the corruption
  checks (``kvstore.corrupt``).
- ``promote`` (etcd's ``/members/promote``): a follower hands a MemberPromote to the leader, the one
  member that knows whether the learner has caught up.
"""

from __future__ import annotations

from typing import Protocol

import msgpack

from kvstore.apply import Applier
from kvstore.errors import ANSWERABLE, as_etcd
from kvstore.server.peer_wire import (
    HASHKV,
    MEMBERS,
    PROMOTE,
    ask_hash_kv,
    ask_promote,
    error,
    fetch_cluster,
    members_from_wire,
    members_wire,
    ok,
)
from kvstore.server.reconfig import ReconfigHost, promote_here
from kvstore.snapshot.maintenance import MemberState, hash_kv
from raft.transport import PeerRequestError

__all__ = ["ask_hash_kv", "ask_promote", "fetch_cluster", "handle", "members_from_wire", "members_wire"]


class Answerer(ReconfigHost, MemberState, Protocol):
    """What answering a peer needs of a member (``kvstore.server.member.Member``)."""

    cluster_id: int
    applier: Applier


async def handle(member: Answerer, peer: int, body: bytes) -> bytes:
    """Answers one request of peer (0: a member that does not know the cluster yet)."""
    try:
        method, arg = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PeerRequestError(f"undecodable request: {exc}") from None
    if method == MEMBERS:
        membership = member.applier.membership
        return ok([member.cluster_id, members_wire(membership.sorted_members()), sorted(membership.removed)])
    if peer == 0:
        raise PeerRequestError("a member that is not part of the cluster may only ask for its members")
    try:
        if method == HASHKV:
            return ok(list(await hash_kv(member, int(arg))))
        if method == PROMOTE:
            return ok(members_wire(await promote_here(member, int(arg))))
    except ANSWERABLE as exc:
        return error(as_etcd(exc))
    raise PeerRequestError(f"unknown request {method!r}")
