"""Membership changes as etcd's server makes them: checks before proposing, then ``Member.configure``.

- **add** (MemberAdd): the peer URLs must be valid (etcd's ``types.NewURLs``: http, https, unix or
  unixs, ``host:port``, no path); the new id is etcd's (sha1 of the sorted URLs and the time), so
  re-adding the same URLs later gets a new id and ids are never reused.
- **remove** (MemberRemove), **update** (MemberUpdate, new peer URLs; like etcd 3.4, not checked).
- **promote** (MemberPromote): only the leader knows whether a learner has caught up (its log
  matches at least 90% of the leader's, etcd's ``readyPercent``); a follower hands the request to
  the leader over the peer transport (``kvstore.server.peer_requests``), as etcd forwards it.

``--strict-reconfig-check`` (on by default, as in etcd) refuses a change that would leave fewer
started members (members that have published a name) than a quorum, and one made while this member
has not been connected to every voter for the last 5 seconds (etcd's ``HealthInterval``) when that
could break the active quorum. What the applier then validates is in ``kvstore.membership``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import urlsplit

from kvstore.apply import Applier
from kvstore.config import ServerConfig
from kvstore.errors import (
    LearnerNotReady,
    MemberBadURLs,
    MemberNotEnoughStarted,
    NoLeader,
    NotLeader,
    Stopped,
    Timeout,
    TooManyRequests,
    Unhealthy,
)
from kvstore.membership import ADD, ADD_LEARNER, REMOVE, UPDATE, ChangeContext, MemberInfo, new_member_id
from kvstore.server.peer_wire import Asker, ask_promote
from raft.transport import PeerRequestError

HEALTH_INTERVAL = 5.0  # etcd's HealthInterval
READY_PERCENT = 0.9  # etcd's readyPercent
FORWARD_RETRY = 0.1
_TRANSIENT = (PeerRequestError, NotLeader, NoLeader, Stopped, TooManyRequests)


class ReconfigHost(Asker, Protocol):
    """What membership changes need of a member (``kvstore.server.member.Member``)."""

    member_id: int
    cfg: ServerConfig
    applier: Applier

    async def configure(self, kind: str, member_id: int, ctx: ChangeContext) -> list[MemberInfo]: ...


def parse_urls(urls: list[str]) -> list[str]:
    """etcd's types.NewURLs, sorted; MemberBadURLs for anything it would refuse."""
    if not urls:
        raise MemberBadURLs()
    out = []
    for raw in urls:
        text = raw.strip()
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise MemberBadURLs() from None
        if parts.scheme not in ("http", "https", "unix", "unixs"):
            raise MemberBadURLs()
        if port is None:  # Go's net.SplitHostPort wants host:port (the host may be empty)
            raise MemberBadURLs()
        if parts.path or parts.query or parts.fragment:
            raise MemberBadURLs()
        out.append(text)
    return sorted(out)


# ---- strict reconfiguration checks (etcd's RaftCluster.IsReadyTo* and isConnected*) ----


def _connected(member: ReconfigHost, peer: int) -> bool:
    if peer == member.member_id:
        return True
    up = getattr(member.log, "connected_for", lambda _p: None)(peer)
    return up is not None and up >= HEALTH_INTERVAL


def _voters(member: ReconfigHost) -> list[MemberInfo]:
    return member.applier.membership.voters()


def ready_to_add_voter(member: ReconfigHost) -> bool:
    nmembers, nstarted = 1, 0
    for m in _voters(member):
        nstarted += m.started
        nmembers += 1
    if nstarted == 1 and nmembers == 2:  # adding a member to a one-member cluster
        return True
    return nstarted >= nmembers // 2 + 1


def ready_to_remove_voter(member: ReconfigHost, member_id: int) -> bool:
    others = [m for m in _voters(member) if m.id != member_id]
    return sum(m.started for m in others) >= len(others) // 2 + 1


def ready_to_promote(member: ReconfigHost) -> bool:
    voters = _voters(member)
    nmembers, nstarted = len(voters) + 1, sum(m.started for m in voters) + 1  # the learner counts, as started
    return nstarted >= nmembers // 2 + 1


def _may_add(member: ReconfigHost, learner: bool) -> None:
    if not member.cfg.strict_reconfig_check:
        return
    if not learner and not ready_to_add_voter(member):
        raise MemberNotEnoughStarted()
    if not all(_connected(member, m.id) for m in _voters(member)):
        raise Unhealthy()


def _may_remove(member: ReconfigHost, member_id: int) -> None:
    if not member.cfg.strict_reconfig_check:
        return
    info = member.applier.membership.members.get(member_id)
    if info is not None and info.is_learner:
        return
    if not ready_to_remove_voter(member, member_id):
        raise MemberNotEnoughStarted()
    if member_id != member.member_id and getattr(member.log, "connected_for", lambda _p: None)(member_id) is None:
        return  # a member that is down is not part of the active quorum
    voters = _voters(member)
    active = sum(_connected(member, m.id) for m in voters)
    if active - 1 < 1 + (len(voters) - 1) // 2:
        raise Unhealthy()


def _learner_ready(member: ReconfigHost, member_id: int) -> None:
    progress = getattr(member.log, "progress", lambda: None)()
    if progress is None:
        raise NotLeader()
    if member_id in progress and progress[member_id] < progress[member.member_id] * READY_PERCENT:
        raise LearnerNotReady()


# ---- the changes ----


async def add_member(member: ReconfigHost, peer_urls: list[str], learner: bool) -> tuple[MemberInfo, list[MemberInfo]]:
    urls = parse_urls(peer_urls)
    new_id = new_member_id(urls, int(time.time()))
    _may_add(member, learner)
    ctx = ChangeContext(peer_urls=tuple(urls), learner=learner)
    members = await member.configure(ADD_LEARNER if learner else ADD, new_id, ctx)
    return MemberInfo(new_id, "", urls, [], learner), members


async def remove_member(member: ReconfigHost, member_id: int) -> list[MemberInfo]:
    _may_remove(member, member_id)
    return await member.configure(REMOVE, member_id, ChangeContext())


async def update_member(member: ReconfigHost, member_id: int, peer_urls: list[str]) -> list[MemberInfo]:
    return await member.configure(UPDATE, member_id, ChangeContext(peer_urls=tuple(peer_urls)))


async def promote_here(member: ReconfigHost, member_id: int) -> list[MemberInfo]:
    """Promotes on this member, which must lead (NotLeader otherwise)."""
    _learner_ready(member, member_id)
    if member.cfg.strict_reconfig_check and not ready_to_promote(member):
        raise MemberNotEnoughStarted()
    return await member.configure(ADD, member_id, ChangeContext(promote=True))


async def promote_member(member: ReconfigHost, member_id: int) -> list[MemberInfo]:
    """etcd's PromoteMember: on the leader, or handed to it, asking again until the request timeout."""
    try:
        return await promote_here(member, member_id)
    except NotLeader:
        pass
    deadline = time.monotonic() + member.cfg.request_timeout_s
    while time.monotonic() < deadline:
        leader = member.log.leader
        if leader == member.member_id:
            try:
                return await promote_here(member, member_id)
            except NotLeader:
                pass
        elif leader:
            try:
                return await ask_promote(member, leader, member_id)
            except _TRANSIENT:
                pass  # the leader moved or is busy: ask again
        await asyncio.sleep(FORWARD_RETRY)
    raise Timeout()
