"""The key index's generations and compaction, on the worked example in key_index.py."""

from __future__ import annotations

from kvstore.mvcc.key_index import KeyIndex


def example() -> KeyIndex:
    # put(1.0); put(2.0); tombstone(3.0); put(4.0); tombstone(5.0)
    ki = KeyIndex(b"foo")
    ki.put((1, 0))
    ki.put((2, 0))
    ki.tombstone((3, 0))
    ki.put((4, 0))
    ki.tombstone((5, 0))
    return ki


def gens(ki: KeyIndex) -> list[list[tuple[int, int]]]:
    return [g.revs for g in ki.generations]


def test_generations() -> None:
    assert gens(example()) == [[(1, 0), (2, 0), (3, 0)], [(4, 0), (5, 0)], []]


def test_get_at_every_revision() -> None:
    ki = example()
    assert ki.get(0) is None
    assert ki.get(1) == ((1, 0), (1, 0), 1)
    assert ki.get(2) == ((2, 0), (1, 0), 2)
    assert ki.get(3) is None  # deleted at 3
    assert ki.get(4) == ((4, 0), (4, 0), 1)
    assert ki.get(5) is None
    assert ki.get(100) is None


def test_compaction_as_etcd_documents_it() -> None:
    ki = example()
    kept: set = set()
    ki.compact(2, kept)
    assert gens(ki) == [[(2, 0), (3, 0)], [(4, 0), (5, 0)], []]
    assert kept == {(2, 0)}
    kept = set()
    ki.compact(4, kept)
    assert gens(ki) == [[(4, 0), (5, 0)], []]
    assert kept == {(4, 0)}
    kept = set()
    ki.compact(5, kept)
    assert gens(ki) == [[(5, 0)], []]  # the deletion at 5 is an event of 5: kept (etcd-io/etcd#18089)
    assert kept == {(5, 0)}
    assert ki.get(5) is None and ki.get(6) is None and not ki.is_empty()
    kept = set()
    ki.compact(6, kept)
    assert gens(ki) == [[]] and ki.is_empty()
    assert kept == set()


def test_compaction_at_a_deletion_keeps_it_for_watchers() -> None:
    ki = example()
    kept: set = set()
    ki.compact(3, kept)
    assert gens(ki) == [[(3, 0)], [(4, 0), (5, 0)], []]
    assert kept == {(3, 0)}
    assert ki.get(3) is None and ki.get(4) == ((4, 0), (4, 0), 1)
    assert ki.since(3) == [(3, 0), (4, 0), (5, 0)]


def test_compaction_keeps_every_event_of_its_revision() -> None:
    # one txn at 3 puts and then deletes the key; another at 5 deletes it and creates it anew
    ki = KeyIndex(b"foo")
    ki.put((1, 0))
    ki.put((3, 0))
    ki.tombstone((3, 1))
    ki.put((4, 0))
    ki.tombstone((5, 0))
    ki.put((5, 1))
    kept: set = set()
    ki.compact(3, kept)
    assert gens(ki) == [[(3, 0), (3, 1)], [(4, 0), (5, 0)], [(5, 1)]]
    assert kept == {(3, 0), (3, 1)}
    kept = set()
    ki.compact(5, kept)
    assert gens(ki) == [[(5, 0)], [(5, 1)]]  # the deletion and the new life, both events of 5
    assert kept == {(5, 0), (5, 1)}
    assert ki.get(5) == ((5, 1), (5, 1), 1)
    kept = set()
    ki.compact(7, kept)
    assert gens(ki) == [[(5, 1)]]
    assert kept == {(5, 1)}


def test_a_restored_lone_tombstone_is_compacted_later() -> None:
    ki = KeyIndex(b"foo")
    ki.restore_tombstone((5, 0))  # what a compaction at 5 left in the backend
    assert ki.get(5) is None and ki.get(4) is None and ki.since(5) == [(5, 0)]
    kept: set = set()
    ki.compact(5, kept)
    assert kept == {(5, 0)}  # a compaction at 5 resumed after a restart still keeps it
    assert ki.since(5) == [(5, 0)]
    kept = set()
    ki.compact(6, kept)
    assert ki.is_empty() and kept == set()
    ki.put((7, 0))
    assert ki.get(7) == ((7, 0), (7, 0), 1)


def test_what_each_compaction_of_the_example_keeps() -> None:
    expected = {3: {(3, 0)}, 4: {(4, 0)}, 6: set()}  # at 3 the deletion is an event of 3; at 6 deleted at 5
    for at_rev, kept_revs in expected.items():
        kept: set = set()
        example().compact(at_rev, kept)
        assert kept == kept_revs, at_rev


def test_since_lists_history_for_watchers() -> None:
    assert example().since(2) == [(2, 0), (3, 0), (4, 0), (5, 0)]
