"""The watch checker: etcd's six watch guarantees, the canonical history, and what follows from it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaos.checker.watch import check
from chaos.history import FAIL
from tests.chaos.histories import WatchBuilder, delete_event, put_event

A2 = put_event("k1", "a", 2, 2, 1)
B3 = put_event("k2", "b", 3, 3, 1)
C4 = put_event("k1", "c", 4, 2, 2)
D4 = put_event("k2", "d", 4, 3, 2)
X5 = delete_event("k1", 5)


def writes(b: WatchBuilder) -> None:
    b.put([("k1", "a")], 2)
    b.put([("k2", "b")], 3)
    b.put([("k1", "c"), ("k2", "d")], 4)
    b.delete("k1", 5)


def good(b: WatchBuilder, w0: Callable[[WatchBuilder], None] | None = None) -> WatchBuilder:
    writes(b)
    b.open("w0", 1, start=2)
    if w0 is None:
        b.recv("w0", 1, [A2])
        b.recv("w0", 1, [B3])
        b.recv("w0", 1, [C4, D4])
        b.recv("w0", 1, [X5])
        b.progress("w0", 1, 5)
    else:
        w0(b)
    b.open("w1", 1, start=0, created_at=3)
    b.recv("w1", 1, [C4, D4])
    b.recv("w1", 1, [X5])
    b.final([["k2", "d", 4, 3, 2]], 5)
    return b


def kinds(b: WatchBuilder) -> set[str]:
    result = check(b.operations())
    return set(result["violation_counts"])


def test_a_correct_history_is_valid() -> None:
    result = check(good(WatchBuilder()).operations())
    assert result["verdict"] == "valid", result["violations"]
    assert result["sessions"] == 2 and result["revisions"] == 4


@pytest.mark.parametrize(
    ("name", "w0", "expected"),
    [
        ("reliable", lambda b: (b.recv("w0", 1, [A2]), b.recv("w0", 1, [C4, D4])), "reliable"),
        ("unique", lambda b: (b.recv("w0", 1, [A2, B3]), b.recv("w0", 1, [B3])), "unique"),
        ("ordered", lambda b: (b.recv("w0", 1, [A2]), b.recv("w0", 1, [C4, D4]), b.recv("w0", 1, [B3])), "ordered"),
        ("atomic", lambda b: (b.recv("w0", 1, [A2, B3]), b.recv("w0", 1, [C4]), b.recv("w0", 1, [D4])), "atomic"),
        (
            "bookmarkable",
            lambda b: (b.recv("w0", 1, [A2]), b.progress("w0", 1, 3), b.recv("w0", 1, [B3])),
            "bookmarkable",
        ),
        ("bookmark-missing", lambda b: (b.recv("w0", 1, [A2]), b.progress("w0", 1, 4)), "bookmarkable"),
        ("filter", lambda b: b.recv("w0", 1, [A2, put_event("zz", "q", 3, 3, 1)]), "filter"),
    ],
)
def test_each_guarantee_can_fail(name: str, w0: Callable[[WatchBuilder], None], expected: str) -> None:
    assert expected in kinds(good(WatchBuilder(), w0)), name


def test_watchers_must_agree_with_each_other_and_the_writes() -> None:
    b = good(WatchBuilder())
    b.open("w2", 1, start=4)
    b.recv("w2", 1, [put_event("k1", "c", 4, 2, 2), put_event("k2", "zz", 4, 3, 2)])
    assert {"disagreement", "garbage"} <= kinds(b)


def test_events_from_failed_writes_are_caught() -> None:
    b = WatchBuilder()
    b.put([("k1", "a")], 2)
    b.put([("k1", "lost")], None, FAIL)
    b.open("w0", 1, start=2)
    b.recv("w0", 1, [A2, put_event("k1", "lost", 3, 2, 2)])
    assert "aborted" in kinds(b)


def test_versions_and_create_revisions_follow_the_key() -> None:
    b = good(WatchBuilder(), lambda b: b.recv("w0", 1, [A2, B3, put_event("k1", "c", 4, 2, 3), D4]))
    assert "version" in kinds(b)


def test_prev_kv() -> None:
    def run(prev: list | None, compact: int = 0) -> set[str]:
        b = WatchBuilder()
        writes(b)
        if compact:
            b.compact(compact)
        b.open("w0", 1, start=4, prev_kv=True)
        b.recv("w0", 1, [put_event("k1", "c", 4, 2, 2, prev), put_event("k2", "d", 4, 3, 2, ["b", 3])])
        b.recv("w0", 1, [delete_event("k1", 5, ["c", 4])])
        return kinds(b)

    assert run(["a", 2]) == set()
    assert "prev_kv" in run(["zzz", 2])
    assert "prev_kv" in run(None)
    assert run(None, compact=4) == set()  # etcd leaves prev_kv out once the previous revision is compacted


def test_writes_acknowledged_in_real_time_order_get_increasing_revisions() -> None:
    b = WatchBuilder()
    b.put([("k1", "a")], 10)
    b.put([("k1", "b")], 9)
    assert "real-time" in kinds(b)
    b = WatchBuilder()
    b.put([("k1", "a")], 9)
    b.put([("k2", "b")], 9)
    assert "revision" in kinds(b)


def test_final_state_must_end_the_canonical_history() -> None:
    b = WatchBuilder()
    writes(b)
    b.open("final-watcher-m1", 1, start=2)
    b.recv("final-watcher-m1", 1, [A2, B3, C4, D4, X5])
    b.final([["k1", "c", 4, 2, 2], ["k2", "d", 4, 3, 2]], 5)  # k1 was deleted at 5
    b.final([["k2", "d", 4, 3, 2]], 5, member=1)
    assert kinds(b) == {"final-state"}


def test_final_state_is_judged_where_the_final_watches_reached() -> None:
    b = WatchBuilder()
    writes(b)
    b.open("final-watcher-m1", 1, start=2)
    b.recv("final-watcher-m1", 1, [A2, B3, C4, D4, X5])
    b.final([["k2", "d", 4, 3, 2]], 5)
    result = check(b.operations())
    assert result["verdict"] == "valid", result["violations"]
    assert result["final_state"] == {"checked": True, "revision": 5, "watched_from": 2, "watched_to": 5}


def test_a_final_read_beyond_the_final_watches_is_not_judged() -> None:
    # a write whose client gave up committed at 6, after the final watches ended at 5: the final
    # read sees it, the canonical history does not, and that proves nothing either way
    b = WatchBuilder()
    writes(b)
    b.open("final-watcher-m1", 1, start=2)
    b.recv("final-watcher-m1", 1, [A2, B3, C4, D4, X5])
    b.final([["k1", "e", 6, 6, 1], ["k2", "d", 4, 3, 2]], 6)
    result = check(b.operations())
    assert result["verdict"] == "valid", result["violations"]
    assert result["final_state"]["checked"] is False and result["final_state"]["watched_to"] == 5
