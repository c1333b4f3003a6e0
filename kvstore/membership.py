"""Cluster membership as the log has applied it: ids, names, peer and client URLs, learner flags,
and the ids removed for good.

Stored in the backend: ``members`` (member id -> msgpack record) and ``members_removed`` (etcd's
own encoding: the id in hex -> ``removed``, so snapshots carry it as etcd's backend does). Changed
only by the applier, in log order: conf change entries add, promote, update and remove members;
each member publishes its name and client URLs through the log once it starts, as etcd members do.

Every membership change is validated when its entry is applied (``check``), exactly as etcd's
``ValidateConfigurationChange`` does, so every member accepts or rejects it alike; a rejected
change is applied to Raft as a no-op and its proposer gets etcd's error. Beyond etcd: removing the
last voter is refused (etcd's Raft would panic on it).

A conf change's context (``ChangeContext``) is msgpack: the request id that lets the proposing
member find its waiting client, and the member the change describes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack

from kvstore.errors import (
    EtcdError,
    MemberExist,
    MemberNotEnoughStarted,
    MemberNotFound,
    MemberNotLearner,
    PeerURLExist,
    TooManyLearners,
)
from kvstore.mvcc.backend import Backend, Txn, from_u64, u64
from kvstore.snapshot import etcd_schema as s

MAX_LEARNERS = 1  # etcd's maxLearners
REMOVED_VALUE = b"removed"

ADD, ADD_LEARNER, REMOVE, UPDATE = "add", "add_learner", "remove", "update"


@dataclass(slots=True)
class MemberInfo:
    id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    def encode(self) -> bytes:
        return msgpack.packb([self.name, self.peer_urls, self.client_urls, self.is_learner])

    @staticmethod
    def decode(member_id: int, raw: bytes) -> MemberInfo:
        name, peer_urls, client_urls, is_learner = msgpack.unpackb(raw)
        return MemberInfo(member_id, name, list(peer_urls), list(client_urls), bool(is_learner))

    @property
    def started(self) -> bool:
        """etcd's IsStarted: the member has published its name (it ran and joined)."""
        return bool(self.name)


@dataclass(frozen=True, slots=True)
class ChangeContext:
    """What a conf change entry carries: the request id of its proposer (0: none waits) and the member."""

    request_id: int = 0
    name: str = ""
    peer_urls: tuple[str, ...] = ()
    learner: bool = False
    promote: bool = False

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "req": self.request_id,
                "name": self.name,
                "peers": list(self.peer_urls),
                "learner": self.learner,
                "promote": self.promote,
            }
        )

    @staticmethod
    def decode(raw: bytes) -> ChangeContext:
        if not raw:
            return ChangeContext()
        value = msgpack.unpackb(raw)
        if isinstance(value, list):  # the first version: [name, peer urls]
            name, peers = value
            return ChangeContext(0, name, tuple(peers))
        return ChangeContext(
            int(value.get("req", 0)),
            str(value.get("name", "")),
            tuple(value.get("peers", ())),
            bool(value.get("learner", False)),
            bool(value.get("promote", False)),
        )


def new_member_id(peer_urls: Iterable[str], unix_time: int) -> int:
    """etcd's NewMember id for a member added at run time: sha1 of the sorted peer URLs, the (empty)
    cluster name and the time in seconds; the time makes re-adding the same URLs a new id."""
    data = "".join(sorted(peer_urls)) + str(unix_time)
    return struct.unpack(">Q", hashlib.sha1(data.encode()).digest()[:8])[0]


class Membership:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.members: dict[int, MemberInfo] = {}
        self.removed: set[int] = set()
        with backend.begin_read() as txn:
            for key, raw in txn.cursor(db=backend.dbs[s.MEMBERS]):
                self.members[from_u64(key)] = MemberInfo.decode(from_u64(key), raw)
            for key, _ in txn.cursor(db=backend.dbs[s.MEMBERS_REMOVED]):
                self.removed.add(int(key, 16))

    # ---- views ----

    def voters(self) -> list[MemberInfo]:
        return [m for m in self.members.values() if not m.is_learner]

    def conf_state(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(voters, learners) as applied, or None when no member is recorded (an old data directory)."""
        if not self.members:
            return None
        voters = tuple(sorted(m.id for m in self.members.values() if not m.is_learner))
        learners = tuple(sorted(m.id for m in self.members.values() if m.is_learner))
        return voters, learners

    def peer_urls(self) -> dict[int, list[str]]:
        return {m.id: list(m.peer_urls) for m in self.members.values()}

    def sorted_members(self) -> list[MemberInfo]:
        return [self.members[i] for i in sorted(self.members)]

    # ---- validation (etcd's ValidateConfigurationChange, plus the last voter) ----

    def check(self, kind: str, member_id: int, ctx: ChangeContext) -> EtcdError | None:
        """etcd's error for a change that must not take effect, or None."""
        if member_id in self.removed:
            return MemberNotFound()  # membership: ID removed
        current = self.members.get(member_id)
        if kind in (ADD, ADD_LEARNER):
            if ctx.promote:
                if current is None:
                    return MemberNotFound()
                if not current.is_learner:
                    return MemberNotLearner()
                return None
            if current is not None:
                return MemberExist()
            in_use = {u for m in self.members.values() for u in m.peer_urls}
            if any(u in in_use for u in ctx.peer_urls):
                return PeerURLExist()
            if kind == ADD_LEARNER and sum(m.is_learner for m in self.members.values()) + 1 > MAX_LEARNERS:
                return TooManyLearners()
            return None
        if kind == REMOVE:
            if current is None:
                return MemberNotFound()
            if not current.is_learner and len(self.voters()) == 1:
                return MemberNotEnoughStarted()
            return None
        if kind == UPDATE:
            if current is None:
                return MemberNotFound()
            in_use = {u for m in self.members.values() if m.id != member_id for u in m.peer_urls}
            if any(u in in_use for u in ctx.peer_urls):
                return PeerURLExist()
            return None
        raise ValueError(f"unknown membership change {kind!r}")

    def reflects(self, kind: str, member_id: int, ctx: ChangeContext) -> bool:
        """Whether the membership shows the effect of a change applied before (a replayed entry)."""
        current = self.members.get(member_id)
        if kind == REMOVE:
            return current is None and member_id in self.removed
        if kind in (ADD, ADD_LEARNER):
            if current is None:
                return False
            return not current.is_learner if ctx.promote else True
        return current is not None

    # ---- changes (in the applier's write transaction) ----

    def _store(self, txn: Txn, info: MemberInfo) -> None:
        self.members[info.id] = info
        txn.put(u64(info.id), info.encode(), db=self.backend.dbs[s.MEMBERS])

    def apply(self, txn: Txn, kind: str, member_id: int, ctx: ChangeContext, known: MemberInfo | None) -> None:
        """Applies a change check() accepted. known describes a member whose entry carries no context
        (the first entries of a cluster bootstrapped before contexts were written)."""
        if kind == REMOVE:
            if self.members.pop(member_id, None) is not None:
                txn.delete(u64(member_id), db=self.backend.dbs[s.MEMBERS])
            self.removed.add(member_id)
            txn.put(s.member_key(member_id), REMOVED_VALUE, db=self.backend.dbs[s.MEMBERS_REMOVED])
            return
        info = self.members.get(member_id)
        if kind == UPDATE:
            assert info is not None
            info.peer_urls = list(ctx.peer_urls)
            self._store(txn, info)
            return
        if info is None:
            info = MemberInfo(member_id)
            if ctx.peer_urls:
                info.name, info.peer_urls = ctx.name, list(ctx.peer_urls)
            elif known is not None:
                info.name, info.peer_urls = known.name, list(known.peer_urls)
        info.is_learner = kind == ADD_LEARNER
        self._store(txn, info)

    def publish(self, txn: Txn, member_id: int, name: str, client_urls: list[str]) -> None:
        info = self.members.get(member_id)
        if info is None:  # removed meanwhile: nothing to publish to
            return
        info.name = name
        info.client_urls = list(client_urls)
        self._store(txn, info)
