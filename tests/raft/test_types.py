"""Value types: wire round trips, conf change encoding, hard state helpers."""

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from raft.core import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
entries = st.lists(st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)), st.binary(max_size=20)), max_size=5)
snapshots = st.none() | st.builds(
    Snapshot,
    st.builds(
        SnapshotMetadata,
        st.integers(1, 1 << 40),
        u64,
        st.builds(ConfState, st.lists(u64, max_size=3).map(tuple), st.lists(u64, max_size=3).map(tuple)),
    ),
    st.binary(max_size=30),
)


@st.composite
def messages(draw):
    ents = draw(entries)
    return Message(
        draw(st.sampled_from(list(MessageType))),
        draw(u64),
        draw(u64),
        draw(u64),
        draw(u64),
        draw(u64),
        ents if ents else (),
        draw(u64),
        draw(st.booleans()),
        draw(u64),
        draw(snapshots),
        draw(st.binary(max_size=10)),
    )


def _only_primitives(x):
    if isinstance(x, list):
        return all(_only_primitives(i) for i in x)
    return type(x) in (int, bytes, bool)


@given(messages())
def test_message_wire_round_trip(m):
    w = m.to_wire()
    assert _only_primitives(w)
    assert Message.from_wire(w) == m
    # and through msgpack, as the transport will do it
    assert Message.from_wire(msgpack.unpackb(msgpack.packb(w))) == m


def test_message_wire_round_trip_with_entries_and_snapshot():
    snap = Snapshot(SnapshotMetadata(7, 3, ConfState((1, 2, 3), (4,))), b"state")
    m = Message(
        MessageType.APP,
        to=2,
        frm=1,
        term=3,
        log_term=2,
        index=5,
        entries=[Entry(3, 6, EntryType.NORMAL, b"a"), Entry(3, 7, EntryType.CONF_CHANGE, b"b")],
        commit=5,
        snapshot=snap,
        context=b"ctx",
    )
    got = Message.from_wire(msgpack.unpackb(msgpack.packb(m.to_wire())))
    assert got == m
    assert got.type is MessageType.APP and got.entries[1].type is EntryType.CONF_CHANGE
    assert got.snapshot.metadata.conf_state == ConfState((1, 2, 3), (4,))


def test_conf_change_encode_decode():
    for t in ConfChangeType:
        cc = ConfChange(t, 42, b"http://x")
        assert ConfChange.decode(cc.encode()) == cc
        assert isinstance(cc.encode(), bytes)


def test_hard_state_is_empty():
    assert HardState().is_empty()
    assert not HardState(term=1).is_empty()
    assert not HardState(vote=1).is_empty()
    assert not HardState(commit=1).is_empty()
