"""kvstore.auth.perms: etcd's permission intervals, checked against brute force over a small keyspace."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.auth.perms import READ, READWRITE, WRITE, UserPerms, perm_interval

ALPHABET = b"\x00ab"
# every key of up to three bytes: any gap between intervals whose ends have at most two bytes
# (or are a two-byte key and \0) starts at one of these
KEYS = [bytes(t) for n in range(4) for t in itertools.product(ALPHABET, repeat=n)]
short = st.binary(max_size=2).map(lambda b: bytes(ALPHABET[x % 3] for x in b))
perm = st.tuples(
    st.sampled_from([READ, WRITE, READWRITE]), short.filter(bool), st.one_of(st.just(b""), st.just(b"\x00"), short)
)


def held(perms: list[tuple[int, bytes, bytes]], kind: int, key: bytes) -> bool:
    for t, k, e in perms:
        if t != READWRITE and t != kind:
            continue
        begin, end = perm_interval(k, e)
        if begin <= key and (end is None or key < end):
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(
    st.lists(perm, max_size=5),
    st.sampled_from([READ, WRITE]),
    short.filter(bool),
    st.one_of(st.just(b""), st.just(b"\x00"), short),
)
def test_permits_is_coverage_of_every_key(perms, kind, key, range_end) -> None:
    up = UserPerms.merge(perms)
    got = up.permits(kind, key, range_end)
    if not range_end:
        assert got == held(perms, kind, key)
        return
    end = None if range_end == b"\x00" else range_end
    if end is not None and end <= key:
        return  # an empty or inverted range: etcd's own arithmetic (test_empty_and_inverted_ranges)
    inside = [k for k in KEYS if k >= key and (end is None or k < end)]
    assert got == all(held(perms, kind, k) for k in inside)


def test_examples_from_etcds_tests() -> None:
    up = UserPerms.merge([(READ, b"a", b"c"), (READ, b"c", b"e"), (WRITE, b"x", b""), (READWRITE, b"z", b"\x00")])
    assert up.permits(READ, b"a", b"e")  # two intervals that touch
    assert not up.permits(READ, b"a", b"f")
    assert up.permits(READ, b"b", b"")
    assert not up.permits(WRITE, b"b", b"")
    assert up.permits(WRITE, b"x", b"") and not up.permits(WRITE, b"x", b"y")
    assert up.permits(READ, b"zz", b"\x00") and up.permits(WRITE, b"z", b"\x00")
    assert not up.permits(READ, b"y", b"\x00")


def test_empty_and_inverted_ranges_answer_as_etcd() -> None:
    """etcd's interval tree calls [a, a) or [b, a) covered when an interval overlaps it by its
    arithmetic (begin < end of the interval and the interval's begin < end); raftkv answers the same."""
    up = UserPerms.merge([(READ, b"\x00", b"\x00")])
    assert up.permits(READ, b"a", b"a") and up.permits(READ, b"b", b"a")
    up = UserPerms.merge([(READ, b"m", b"n")])
    assert not up.permits(READ, b"m", b"a")
