"""WatcherGroup and its interval index against a brute-force scan."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from kvstore.watch.group import WatcherGroup
from kvstore.watch.watcher import Watcher

KEYS = st.binary(min_size=0, max_size=3).map(lambda b: b or b"\x00")
END = st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=3))


def make(key: bytes, end: bytes | None) -> Watcher:
    return Watcher(0, key, end, None)


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(st.tuples(KEYS, END), max_size=40),
    removals=st.lists(st.integers(0, 39), max_size=15),
    probes=st.lists(KEYS, min_size=1, max_size=20),
)
def test_match_equals_brute_force(shapes, removals, probes) -> None:
    group = WatcherGroup()
    watchers = [make(k, e) for k, e in shapes if e is None or e == b"" or k < e]
    for w in watchers:
        group.add(w)
    probes_before = probes[: len(probes) // 2]
    for key in probes_before:  # queries between changes exercise the lazy rebuild
        assert {id(w) for s in group.match(key) for w in s} == {id(w) for w in watchers if w.wants(key)}
    for i in removals:
        if i < len(watchers):
            w = watchers.pop(i)
            assert group.discard(w)
            assert not group.discard(w)
    assert len(group) == len(watchers)
    for key in probes:
        sets = group.match(key)
        got = [w for s in sets for w in s]
        assert len(got) == len({id(w) for w in got})  # disjoint sets
        assert {id(w) for w in got} == {id(w) for w in watchers if w.wants(key)}
        assert group.contains(key) == bool(got)
    assert {id(w) for w in group} == {id(w) for w in watchers}


def test_many_distinct_ranges() -> None:
    group = WatcherGroup()
    watchers = [make(b"%05d" % i, b"%05d" % (i + 25)) for i in range(0, 5000, 3)]
    watchers += [make(b"%05d" % i, b"") for i in range(0, 5000, 500)]
    for w in watchers:
        group.add(w)
    for probe in (b"00000", b"01234", b"04999", b"99999", b"0"):
        expect = {id(w) for w in watchers if w.wants(probe)}
        assert {id(w) for s in group.match(probe) for w in s} == expect
