"""raft.peer_messages: whatever a peer sends decodes to a valid Message or is refused with ValueError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raft.core.types import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata
from raft.peer_messages import MAX_WIRE_INT, message_from_peer

wire = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=8) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=13),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(wire)
def test_anything_decodes_or_is_refused(w: object) -> None:
    try:
        m = message_from_peer(w)
    except ValueError:
        return
    assert isinstance(m, Message) and 0 <= m.term <= MAX_WIRE_INT


def good() -> list[Message]:
    return [
        Message(MessageType.APP, to=2, frm=1, term=3, log_term=2, index=4, entries=[Entry(3, 5, data=b"x")], commit=4),
        Message(MessageType.HEARTBEAT, to=2**64 - 1, frm=2**63, term=3, commit=4, context=b"c"),
        Message(MessageType.VOTE_RESP, to=2, frm=1, term=3, reject=True),
        Message(MessageType.PROP, to=2, frm=1, entries=[Entry(0, 0, data=b"p")]),
    ]


def test_what_members_send_decodes_unchanged() -> None:
    for m in good():
        assert message_from_peer(m.to_wire()) == m
    md = SnapshotMetadata(9, 3, ConfState((1, 2), (3,)))
    snap = Message(MessageType.SNAP, to=2, frm=1, term=3, snapshot=Snapshot(md, b""))
    assert message_from_peer(snap.to_wire(), allow_snapshot=True) == snap


def bad() -> list[Message]:
    return [
        Message(MessageType.HEARTBEAT, to=2, frm=1, term=2**64 - 1),
        Message(MessageType.HEARTBEAT, to=2, frm=1, term=3, commit=2**63),
        Message(MessageType.HUP, to=2, frm=1),
        Message(MessageType.CHECK_QUORUM, to=2, frm=1, term=1),
        Message(MessageType.APP, to=2, frm=1, term=3, index=4, entries=[Entry(3, 9)]),  # not index + 1
        Message(MessageType.APP, to=2, frm=1, term=3, index=4, entries=[Entry(4, 5)]),  # term above the message's
        Message(MessageType.APP, to=2, frm=1, term=3, index=4, entries=[Entry(3, 5), Entry(2, 6)]),  # decreasing
        Message(MessageType.HEARTBEAT, to=2, frm=1, term=3, context=b"x" * 5000),
    ]


def test_what_no_member_sends_is_refused() -> None:
    for m in bad():
        try:
            message_from_peer(m.to_wire())
        except ValueError:
            continue
        raise AssertionError(f"accepted {m}")
    md = SnapshotMetadata(9, 3, ConfState((1, 2)))
    snap = Message(MessageType.SNAP, to=2, frm=1, term=3, snapshot=Snapshot(md, b""))
    for w in (snap.to_wire(), [*good()[1].to_wire()[:8], 1, 0, [], b""], [*good()[1].to_wire()[:11], "ctx"]):
        try:
            message_from_peer(w)
        except ValueError:
            continue
        raise AssertionError(f"accepted {w}")
