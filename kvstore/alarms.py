"""Alarms as the log has applied them (etcd's v3alarm store): NOSPACE and CORRUPT, per member id.

Stored in the backend's ``alarm`` bucket exactly as etcd stores it: the key is a serialized
``etcdserverpb.AlarmMember``, the value empty, so a snapshot carries the alarms to and from etcd
(``kvstore.snapshot``). Changed only by the applier, in log order, so every member agrees on which
alarms are raised. ``get`` answers in a fixed order (by alarm, then member id); etcd's order is
that of a Go map, i.e. none.

``go_text`` spells an alarm as etcd's Status ``errors`` and ``etcdctl alarm list`` show it: Go's
compact protobuf text (``memberID:123 alarm:NOSPACE ``, zero fields left out).
"""

from __future__ import annotations

from kvstore.mvcc.backend import Backend, Txn
from kvstore.snapshot import etcd_schema as s
from proto.etcdserverpb import rpc_pb2 as pb

NOSPACE = pb.NOSPACE
CORRUPT = pb.CORRUPT


class AlarmStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._alarms: set[tuple[int, int]] = set()  # (alarm type, member id)
        self._types: frozenset[int] = frozenset()  # the types raised (the applier asks on every entry)
        with backend.begin_read() as txn:
            for key, _ in txn.cursor(db=backend.dbs[s.ALARM]):
                m = pb.AlarmMember.FromString(key)
                self._alarms.add((m.alarm, m.memberID))
        self._retype()

    def _retype(self) -> None:
        self._types = frozenset(a for a, _ in self._alarms)

    def active(self, alarm: int) -> bool:
        return alarm in self._types

    @property
    def any_raised(self) -> bool:
        return bool(self._types)

    def get(self, alarm: int = pb.NONE) -> list[pb.AlarmMember]:
        """Every alarm of that type (NONE: of every type)."""
        return [
            pb.AlarmMember(memberID=member_id, alarm=a)
            for a, member_id in sorted(self._alarms)
            if alarm == pb.NONE or a == alarm
        ]

    def activate(self, txn: Txn, member_id: int, alarm: int) -> pb.AlarmMember:
        """Raises alarm for member_id (or finds it raised); returns it."""
        m = pb.AlarmMember(memberID=member_id, alarm=alarm)
        if (alarm, member_id) not in self._alarms:
            self._alarms.add((alarm, member_id))
            self._retype()
            txn.put(m.SerializeToString(), b"", db=self.backend.dbs[s.ALARM])
        return m

    def deactivate(self, txn: Txn, member_id: int, alarm: int) -> pb.AlarmMember | None:
        """Clears alarm for member_id; None when it was not raised."""
        if (alarm, member_id) not in self._alarms:
            return None
        self._alarms.discard((alarm, member_id))
        self._retype()
        m = pb.AlarmMember(memberID=member_id, alarm=alarm)
        txn.delete(m.SerializeToString(), db=self.backend.dbs[s.ALARM])
        return m


def go_text(m: pb.AlarmMember) -> str:
    """Go's proto.CompactTextString of an AlarmMember, as etcd prints it."""
    out = ""
    if m.memberID:
        out += f"memberID:{m.memberID} "
    if m.alarm:
        out += f"alarm:{pb.AlarmType.Name(m.alarm)} "
    return out
