"""Cluster membership as the log has applied it: ids, names, peer and client URLs, learner flags.

Stored in the backend's ``members`` bucket (member id -> msgpack record) and changed only by the
applier, in log order: conf change entries add, promote and remove members; each member
publishes its name and client URLs through the log once it starts, as etcd members do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lmdb
import msgpack

from kvstore.mvcc.backend import Backend, from_u64, u64


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

    def context(self) -> bytes:
        """The conf change context that introduces this member."""
        return msgpack.packb([self.name, self.peer_urls])


class Membership:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.db = backend.dbs[b"members"]
        self.members: dict[int, MemberInfo] = {}
        with backend.begin_read() as txn:
            for key, raw in txn.cursor(db=self.db):
                self.members[from_u64(key)] = MemberInfo.decode(from_u64(key), raw)

    def _store(self, txn: lmdb.Transaction, info: MemberInfo) -> None:
        self.members[info.id] = info
        txn.put(u64(info.id), info.encode(), db=self.db)

    def add(
        self, txn: lmdb.Transaction, member_id: int, context: bytes, learner: bool, known: MemberInfo | None
    ) -> None:
        info = self.members.get(member_id)
        if info is None:
            info = MemberInfo(member_id)
            if context:
                name, peer_urls = msgpack.unpackb(context)
                info.name, info.peer_urls = name, list(peer_urls)
            elif known is not None:
                info.name, info.peer_urls = known.name, list(known.peer_urls)
        info.is_learner = learner
        self._store(txn, info)

    def remove(self, txn: lmdb.Transaction, member_id: int) -> None:
        if self.members.pop(member_id, None) is not None:
            txn.delete(u64(member_id), db=self.db)

    def publish(self, txn: lmdb.Transaction, member_id: int, name: str, client_urls: list[str]) -> None:
        info = self.members.get(member_id)
        if info is None:  # removed meanwhile: nothing to publish to
            return
        info.name = name
        info.client_urls = list(client_urls)
        self._store(txn, info)
