"""The bbolt page format: files the writer makes read back the same, pass the integrity check, are laid
out as bbolt lays them out (inline buckets, overflow pages, branch levels), and damaged files are
refused with an error naming the page and the problem. Files real etcd writes: test_bbolt_etcd_files."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore.bbolt import BboltError, BoltFile, Nested, write_file
from kvstore.bbolt.layout import (
    BUCKET_HEADER,
    LEAF_PAGE,
    META,
    NO_FREELIST,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    Meta,
    fnv1a64,
    meta_page,
)

PS = 4096


def build(buckets: list[tuple[bytes, Nested]]) -> bytes:
    out = io.BytesIO()
    size = write_file(out, buckets)
    data = out.getvalue()
    assert len(data) == size
    return data


def as_tree(bucket) -> dict:
    """A bucket as nested dicts (a nested bucket becomes a dict)."""
    tree = {}
    for key, value, flags in bucket.entries():
        tree[key] = as_tree(bucket._child(key, value)) if flags & 1 else value
    return tree


def to_nested(tree: dict) -> Nested:
    return Nested([(k, to_nested(v) if isinstance(v, dict) else v) for k, v in sorted(tree.items())])


def top(data: bytes) -> dict:
    db = BoltFile(data)
    assert db.check() == []
    return as_tree(db.root())


# ---- round trips ----

keys = st.binary(min_size=1, max_size=40)
big_values = st.tuples(st.integers(3000, 9000), st.integers(0, 255)).map(lambda t: bytes([t[1]]) * t[0])
values = st.one_of(st.binary(max_size=64), big_values)
# many short keys: enough for leaves to split (st.lists of similar keys, not random bytes, keeps hypothesis fast)
many = st.integers(0, 400).map(lambda n: {b"key%05d" % i: b"v" * (i % 90) for i in range(n)})
leaf_buckets = st.one_of(st.dictionaries(keys, values, max_size=20), many)
trees = st.recursive(
    leaf_buckets, lambda children: st.dictionaries(keys, st.one_of(values, children), max_size=5), max_leaves=6
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.binary(min_size=1, max_size=12), trees, max_size=4))
def test_any_tree_of_buckets_reads_back_the_same(tree: dict) -> None:
    data = build([(name, to_nested(t)) for name, t in sorted(tree.items())])
    assert top(data) == tree


def test_many_keys_need_branch_levels_and_iterate_in_order() -> None:
    items = [(b"k%07d" % i, b"v" * (i % 200)) for i in range(60_000)]
    data = build([(b"key", Nested(items))])
    db = BoltFile(data)
    assert db.check() == []
    bucket = db.root().bucket(b"key")
    assert bucket is not None and bucket.root != 0
    flags, _, _ = db.page(bucket.root)
    assert flags & 0x01, "the root of a bucket of many leaves is a branch page"
    # three levels: 60,000 keys of ~120 bytes need ~1,900 leaves, more than one branch page holds
    _, _, root_page = db.page(bucket.root)
    _, _, child_page = db.page(struct.unpack_from("<IIQ", root_page, PAGE_HEADER_SIZE)[2])
    assert PAGE_HEADER.unpack_from(child_page)[1] & 0x01
    assert list(bucket) == items


def test_a_value_larger_than_a_page_gets_overflow_pages() -> None:
    big = bytes(range(256)) * 100  # 25,600 bytes: 7 pages
    data = build([(b"b", Nested([(b"a", b"small"), (b"big", big), (b"c", b"after")]))])
    db = BoltFile(data)
    assert db.check() == []
    bucket = db.root().bucket(b"b")
    assert dict(bucket) == {b"a": b"small", b"big": big, b"c": b"after"}
    overflows = [db.overflow(p) for p in bucket.page_ids()]
    assert max(overflows) == 6


def test_small_buckets_are_inline_as_bbolt_decides() -> None:
    small = Nested([(b"a", b"1"), (b"b", b"2")])
    quarter = Nested([(b"x", b"v" * (PS // 4 - 16 - 16 - 1))])  # exactly a quarter page: inline
    over = Nested([(b"x", b"v" * (PS // 4 - 16 - 16))])  # one byte more: a page of its own
    holder = Nested([(b"child", Nested([(b"k", b"v")]))])  # holds a bucket: never inline
    db = BoltFile(build([(b"holder", holder), (b"over", over), (b"quarter", quarter), (b"small", small)]))
    root = db.root()
    assert root.bucket(b"small").root == 0
    assert root.bucket(b"quarter").root == 0
    assert root.bucket(b"over").root != 0
    assert root.bucket(b"holder").root != 0
    assert root.bucket(b"holder").bucket(b"child").root == 0
    assert db.check() == []


def test_empty_buckets_and_an_empty_file() -> None:
    data = build([])
    db = BoltFile(data)
    assert db.check() == [] and list(db.root().buckets()) == []
    assert len(data) == 4 * PS  # two meta pages, the root leaf, the freelist
    assert top(build([(b"a", Nested()), (b"b", Nested())])) == {b"a": {}, b"b": {}}


def test_bucket_sequences_are_kept() -> None:
    db = BoltFile(build([(b"a", Nested([(b"k", b"v")], sequence=7)), (b"b", Nested([(b"n", Nested(sequence=9))]))]))
    assert db.root().bucket(b"a").sequence == 7
    assert db.root().bucket(b"b").bucket(b"n").sequence == 9


def test_meta_pages_are_what_bbolt_writes() -> None:
    data = build([(b"a", Nested([(b"k", b"v")]))])
    m0 = Meta.unpack(data[PAGE_HEADER_SIZE : PAGE_HEADER_SIZE + META.size])
    m1 = Meta.unpack(data[PS + PAGE_HEADER_SIZE : PS + PAGE_HEADER_SIZE + META.size])
    assert (m0.magic, m0.version, m0.page_size) == (0xED0CDAED, 2, PS)
    assert m0.checksum == fnv1a64(data[PAGE_HEADER_SIZE : PAGE_HEADER_SIZE + 56])
    assert m1.txid == m0.txid - 1 and (m1.root, m1.pgid, m1.freelist) == (m0.root, m0.pgid, m0.freelist)
    assert m0.pgid * PS == len(data)


def test_fnv1a64_known_values() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


# ---- the writer refuses what bbolt cannot hold ----


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ([(b"b", b""), (b"a", b"")], "does not sort after"),
        ([(b"a", b""), (b"a", b"")], "does not sort after"),
        ([(b"", b"")], "non-empty"),
        ([(b"k" * 32769, b"")], "exceeds bbolt's 32768"),
        ([(b"a", "text")], "must be bytes or Nested"),
    ],
)
def test_writer_refuses_bad_input(items: list, problem: str) -> None:
    with pytest.raises(BboltError, match=problem):
        build([(b"b", Nested(items))])


def test_top_level_holds_only_buckets() -> None:
    with pytest.raises(BboltError, match="only buckets"):
        write_file(io.BytesIO(), [(b"a", b"plain")])  # type: ignore[list-item]


# ---- damaged files are refused, naming the page and the problem ----


def sample() -> bytearray:
    items = [(b"k%05d" % i, b"v" * 50) for i in range(400)]
    return bytearray(build([(b"key", Nested(items)), (b"meta", Nested([(b"m", b"1")]))]))


def read_all(data: bytes) -> dict:
    db = BoltFile(bytes(data))
    problems = db.check()
    if problems:
        raise BboltError("; ".join(problems))
    return as_tree(db.root())


def test_truncated_file() -> None:
    data = sample()
    with pytest.raises(BboltError, match="truncated"):
        BoltFile(bytes(data[: len(data) - PS]))
    with pytest.raises(BboltError, match="truncated"):
        BoltFile(bytes(data[:100]))  # meta 0 is whole: it says how much is missing
    with pytest.raises(BboltError, match=r"no valid meta page .*too short"):
        BoltFile(bytes(data[:50]))
    with pytest.raises(BboltError, match="no valid meta page"):
        BoltFile(b"")


def test_not_a_bbolt_file() -> None:
    with pytest.raises(BboltError, match="bad magic"):
        BoltFile(bytes(3 * PS))


def test_a_torn_meta_page_falls_back_to_the_other() -> None:
    data = sample()
    expect = read_all(data)
    data[PAGE_HEADER_SIZE + 30] ^= 0xFF  # meta 0 (the newer) fails its checksum
    db = BoltFile(bytes(data))
    assert db.meta.txid == 0  # meta 1's
    assert read_all(data) == expect
    data[PS + PAGE_HEADER_SIZE + 30] ^= 0xFF
    with pytest.raises(BboltError, match=r"no valid meta page \(meta 0: checksum mismatch; meta 1: checksum mismatch"):
        BoltFile(bytes(data))


def leaf_pages(data: bytes) -> list[int]:
    db = BoltFile(bytes(data))
    return [p for p in db.root().bucket(b"key").page_ids() if db.page(p)[0] & LEAF_PAGE]


def test_a_page_whose_header_is_wrong() -> None:
    data = sample()
    victim = leaf_pages(data)[3]
    struct.pack_into("<Q", data, victim * PS, victim + 1)
    with pytest.raises(BboltError, match=f"page {victim}: page header says it is page {victim + 1}"):
        read_all(data)


def test_an_element_pointing_outside_its_page() -> None:
    data = sample()
    victim = leaf_pages(data)[2]
    struct.pack_into("<I", data, victim * PS + PAGE_HEADER_SIZE + 4, 10_000)  # first element's pos
    with pytest.raises(BboltError, match=f"page {victim}: bucket b'key': element 0 .* lies outside the page"):
        read_all(data)


def test_keys_out_of_order_across_pages() -> None:
    data = sample()
    victim = leaf_pages(data)[5]
    # the first key of that page becomes smaller than everything before it
    _, pos, ksize, _ = struct.unpack_from("<IIII", data, victim * PS + PAGE_HEADER_SIZE)
    at = victim * PS + PAGE_HEADER_SIZE + pos
    data[at : at + ksize] = b"a" * ksize
    with pytest.raises(BboltError, match="does not sort after"):
        read_all(data)


def test_a_cycle_of_pages() -> None:
    data = sample()
    db = BoltFile(bytes(data))
    root = db.root().bucket(b"key").root
    # the branch's second child points back at the branch itself
    struct.pack_into("<Q", data, root * PS + PAGE_HEADER_SIZE + 16 + 8, root)
    with pytest.raises(BboltError, match="referenced twice"):
        read_all(data)


def test_a_page_beyond_the_high_water_mark() -> None:
    data = sample()
    db = BoltFile(bytes(data))
    root = db.root().bucket(b"key").root
    struct.pack_into("<Q", data, root * PS + PAGE_HEADER_SIZE + 8, 10_000)
    with pytest.raises(BboltError, match="page id 10000 is outside the pages in use"):
        read_all(data)


def test_check_reports_unreachable_and_doubly_referenced_pages() -> None:
    data = sample()
    db = BoltFile(bytes(data))
    key_bucket = db.root().bucket(b"key")
    children = key_bucket.page_ids()[1:3]
    # a branch element now points at the same leaf as its neighbour; the other leaf is orphaned
    struct.pack_into("<Q", data, key_bucket.root * PS + PAGE_HEADER_SIZE + 16 + 8, children[0])
    problems = BoltFile(bytes(data)).check()
    assert any("multiple references" in p or "referenced twice" in p for p in problems), problems


def test_unreachable_pages_are_free_when_there_is_no_freelist() -> None:
    """etcd runs bbolt with NoFreelistSync: the meta's freelist is all ones and unreachable pages are free."""
    data = sample()
    for page_id in (0, 1):
        m = Meta.unpack(data[page_id * PS + PAGE_HEADER_SIZE : page_id * PS + PAGE_HEADER_SIZE + META.size])
        data[page_id * PS : (page_id + 1) * PS] = meta_page(
            Meta(m.page_size, m.root, m.root_sequence, NO_FREELIST, m.pgid, m.txid), page_id
        )
    assert BoltFile(bytes(data)).check() == []
    assert read_all(data) == read_all(sample())


def test_a_bucket_header_too_short() -> None:
    data = sample()
    db = BoltFile(bytes(data))
    root_page = db.meta.root
    # the root leaf's first element (bucket "key") gets a 3-byte value
    struct.pack_into("<I", data, root_page * PS + PAGE_HEADER_SIZE + 12, 3)
    with pytest.raises(BboltError, match="bucket header of 3 bytes"):
        read_all(data)


def test_open_and_close_a_file(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(build([(b"a", Nested([(b"k", b"v")]))]))
    with BoltFile.open(path) as db:
        assert dict(db.root().bucket(b"a")) == {b"k": b"v"}
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(BboltError, match=f"bbolt file {empty}: file is empty"):
        BoltFile.open(empty)
    assert BUCKET_HEADER.size == 16


def test_a_bucket_whose_root_is_its_parents_page() -> None:
    data = bytearray(build([(b"outer", Nested([(b"inner", Nested([(b"k%04d" % i, b"v" * 40) for i in range(200)]))]))]))
    db = BoltFile(bytes(data))
    outer = db.root().bucket(b"outer")
    inner = outer.bucket(b"inner")
    assert outer.root != 0 and inner.root != 0
    # the inner bucket's header now points at the outer bucket's root: a loop of buckets
    _, _, page = db.page(outer.root)
    _, pos, ksize, _ = struct.unpack_from("<IIII", page, PAGE_HEADER_SIZE)
    at = outer.root * PS + PAGE_HEADER_SIZE + pos + ksize
    struct.pack_into("<Q", data, at, outer.root)
    problems = BoltFile(bytes(data)).check()
    assert any("multiple references" in p for p in problems), problems


SAMPLE = bytes(
    build(
        [
            (b"key", Nested([(b"k%05d" % i, b"v" * (i % 120)) for i in range(600)] + [(b"zbig", b"B" * 9000)])),
            (b"meta", Nested([(b"m", b"1")])),
            (b"nest", Nested([(b"in", Nested([(b"a", b"b")])), (b"x", b"y")])),
        ]
    )
)


def read_everything(data: bytes) -> None:
    db = BoltFile(data)
    db.check()
    for _, bucket in db.root().buckets():
        for key, value, flags in bucket.entries():
            if flags & 1:
                list(bucket._child(key, value).entries())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(  # anywhere, or in the headers and element tables at the start of a page
                st.integers(0, len(SAMPLE) - 1),
                st.tuples(st.integers(0, len(SAMPLE) // PS - 1), st.integers(0, 200)).map(lambda t: t[0] * PS + t[1]),
            ),
            st.integers(1, 255),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_damage_anywhere_is_a_bbolt_error_never_a_crash(flips: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLE)
    for at, mask in flips:
        data[at] ^= mask
    with contextlib.suppress(BboltError):  # a BboltError is the only acceptable failure
        read_everything(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(SAMPLE)))
def test_a_file_cut_anywhere_is_a_bbolt_error(length: int) -> None:
    if length == len(SAMPLE):
        read_everything(SAMPLE)
        return
    with pytest.raises(BboltError):
        read_everything(SAMPLE[:length])
