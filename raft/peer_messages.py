"""What a peer may send: strict decoding of the wire form of Raft messages before the core sees them.

``Message.from_wire`` trusts its input; the transport decodes what arrives from the network with
``message_from_peer`` instead, which refuses (``ValueError``) anything a correct member never
sends: a message type that only the node itself makes (ticks, unreachable and snapshot reports),
a MsgSnap outside a snapshot stream, a field of the wrong type, a term or index outside
``[0, MAX_WIRE_INT]`` (2^62: far beyond any real cluster, and far enough below the wire format's
2^64 that ``term + 1`` can never overflow anywhere), a member id that is not a u64, entries of an
append that do not follow the message's index one by one or whose terms decrease or pass the
message's term, an entry type that does not exist, a context of more than ``MAX_CONTEXT`` bytes. Bytes must be bytes and
booleans booleans: nothing reaches the core that it would have to second-guess.
"""

from __future__ import annotations

from typing import Any

from raft.core.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

MAX_WIRE_INT = 1 << 62
MAX_ID = (1 << 64) - 1
MAX_CONTEXT = 4096
MAX_SNAPSHOT_DATA = 4096  # a MsgSnap's data names a file; the file itself streams separately
MAX_MEMBERS = 1024

REMOTE_TYPES = frozenset(
    {
        MessageType.PROP,
        MessageType.APP,
        MessageType.APP_RESP,
        MessageType.VOTE,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT,
        MessageType.HEARTBEAT_RESP,
        MessageType.TRANSFER_LEADER,
        MessageType.TIMEOUT_NOW,
        MessageType.READ_INDEX,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE,
        MessageType.PRE_VOTE_RESP,
    }
)
_ENTRY_TYPES = {int(t) for t in EntryType}


def _int(value: Any, what: str, limit: int = MAX_WIRE_INT) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise ValueError(f"{what} is not an integer in [0, {limit}]: {repr(value)[:40]}")
    return value


def _id(value: Any, what: str) -> int:
    return _int(value, what, MAX_ID)


def _bytes(value: Any, what: str, limit: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise ValueError(f"{what} is not bytes")
    if limit is not None and len(value) > limit:
        raise ValueError(f"{what} is {len(value)} bytes, over {limit}")
    return value


def _list(value: Any, what: str, length: int | None = None) -> list[Any]:
    if type(value) is not list or (length is not None and len(value) != length):
        raise ValueError(f"{what} is not a list" + (f" of {length}" if length is not None else ""))
    return value


def _ids(value: Any, what: str) -> tuple[int, ...]:
    items = _list(value, what)
    if len(items) > MAX_MEMBERS:
        raise ValueError(f"{what} has {len(items)} members")
    return tuple(_id(i, what) for i in items)


def snapshot_from_peer(w: Any) -> Snapshot:
    index, term, voters, learners, data = _list(w, "snapshot", 5)
    md = SnapshotMetadata(_int(index, "snapshot index"), _int(term, "snapshot term"))
    md = SnapshotMetadata(md.index, md.term, ConfState(_ids(voters, "voters"), _ids(learners, "learners")))
    return Snapshot(md, _bytes(data, "snapshot data", MAX_SNAPSHOT_DATA))


def message_from_peer(w: Any, allow_snapshot: bool = False) -> Message:
    """The message a peer sent, or ValueError saying what is wrong with it."""
    fields = _list(w, "message", 12)
    kind = fields[0]
    if type(kind) is not int:
        raise ValueError("message type is not an integer")
    try:
        mtype = MessageType(kind)
    except ValueError:
        raise ValueError(f"unknown message type {kind}") from None
    if mtype not in REMOTE_TYPES and not (allow_snapshot and mtype is MessageType.SNAP):
        raise ValueError(f"a peer may not send {mtype.name}")
    to, frm = _id(fields[1], "to"), _id(fields[2], "from")
    term, log_term, index = (_int(fields[i], name) for i, name in ((3, "term"), (4, "log term"), (5, "index")))
    commit = _int(fields[7], "commit")
    reject = fields[8]
    if type(reject) is not bool:
        raise ValueError("reject is not a boolean")
    reject_hint = _int(fields[9], "reject hint")
    context = _bytes(fields[11], "context", MAX_CONTEXT)
    entries: list[Entry] = []
    for e in _list(fields[6], "entries"):
        et, ei, etype, data = _list(e, "entry", 4)
        if type(etype) is not int or etype not in _ENTRY_TYPES:
            raise ValueError(f"unknown entry type {repr(etype)[:20]}")
        entries.append(Entry(_int(et, "entry term"), _int(ei, "entry index"), EntryType(etype), _bytes(data, "data")))
    if mtype is MessageType.APP:
        prev_term = 0
        for i, e in enumerate(entries):
            if e.index != index + 1 + i:
                raise ValueError(f"append entry {i} has index {e.index}, not {index + 1 + i}")
            if e.term > term or e.term < prev_term or (e.term < log_term and i == 0):
                raise ValueError(f"append entry {i} has term {e.term} out of order (message term {term})")
            prev_term = e.term
    snap = fields[10]
    snapshot = None
    if snap:
        if mtype is not MessageType.SNAP:
            raise ValueError(f"{mtype.name} carries a snapshot")
        snapshot = snapshot_from_peer(snap)
    elif mtype is MessageType.SNAP:
        raise ValueError("MsgSnap without its snapshot")
    return Message(mtype, to, frm, term, log_term, index, entries or (), commit, reject, reject_hint, snapshot, context)
