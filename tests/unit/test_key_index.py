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
    assert gens(ki) == [[]] and ki.is_empty()
    assert kept == set()


def test_keep_reports_without_changing() -> None:
    ki = example()
    kept: set = set()
    ki.keep(3, kept)
    assert kept == set()  # the revision at 3 is a tombstone: nothing to keep
    kept = set()
    ki.keep(4, kept)
    assert kept == {(4, 0)}
    assert gens(ki) == gens(example())


def test_since_lists_history_for_watchers() -> None:
    assert example().since(2) == [(2, 0), (3, 0), (4, 0), (5, 0)]
