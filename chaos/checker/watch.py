"""Watch histories checked against etcd's six watch guarantees and the keys' canonical histories.

The canonical history is what happened at each revision: every event any watcher received
(they must all agree on it) and every acknowledged write with the revision it was given (a
put names its value, a delete that deleted something names its key). A watch session is one
stream: its scope (a key or a range), where it started, what it received, and how far it is
known to be complete (the last event, or a progress notification's revision).

Checked, with etcd's names (https://etcd.io/docs/v3.5/learning/api_guarantees/#watch-apis):

- **Ordered**: revisions never go back within a session; an event never comes after a later one.
- **Unique**: no event (revision, key) twice in a session.
- **Atomic**: the events of one revision arrive in one response, never split.
- **Reliable**: a session misses no event of its scope between its start and how far it got.
- **Resumable**: watchers resume from the revision after the last they saw; each resumed
  session is checked for reliability from that revision, so resumption loses nothing.
- **Bookmarkable**: after a progress notification at revision R, every event up to R has been
  delivered and none at or below R comes later.

And beyond the six: watchers agree with each other and with the writes (value, revision,
create revision and version of every event), no event comes from a write that failed or that
nobody made, an event's version and create revision follow from the previous event on its
key, ``prev_kv`` is the key's previous value, writes acknowledged one after the other in real
time got increasing revisions, and every member's final state equals the canonical history's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.history import FAIL, OK, Operation

VALID, INVALID = "valid", "invalid"


@dataclass
class Violation:
    type: str
    explanation: str
    ops: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "explanation": self.explanation, "ops": self.ops}


@dataclass
class _Session:
    process: str
    session: int
    open_op: int
    key: str
    range_end: str
    start: int
    prev_kv: bool
    node: str | None
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    times: dict[int, int] = field(default_factory=dict)  # op -> when it was received

    def in_scope(self, key: str) -> bool:
        if not self.range_end:
            return key == self.key
        return self.key <= key < self.range_end


@dataclass
class _Canon:
    kind: str
    value: str
    create: int | None
    version: int | None
    source: int  # op that told us


def check(ops: list[Operation]) -> dict[str, Any]:
    violations: list[Violation] = []
    canon: dict[tuple[int, str], _Canon] = {}
    written: dict[tuple[str, str], tuple[int, Operation]] = {}  # (key, value) -> the write
    sessions: dict[tuple[str, int], _Session] = {}
    finals: list[tuple[int, dict[str, Any]]] = []

    def learn(rev: int, key: str, kind: str, value: str, create: int | None, version: int | None, src: int) -> None:
        have = canon.get((rev, key))
        if have is None:
            canon[(rev, key)] = _Canon(kind, value, create, version, src)
            return
        same = have.kind == kind and (kind == "delete" or have.value == value)
        for a, b in ((have.create, create), (have.version, version)):
            if a is not None and b is not None and a != b:
                same = False
        if not same:
            violations.append(
                Violation(
                    "disagreement",
                    f"revision {rev} of {key!r}: {kind} {value!r} (create {create}, version {version}) here, "
                    f"{have.kind} {have.value!r} (create {have.create}, version {have.version}) in op {have.source}",
                    [have.source, src],
                )
            )
        else:
            have.create = have.create if have.create is not None else create
            have.version = have.version if have.version is not None else version

    # ---- writes ----
    by_revision: dict[int, int] = {}
    for i, op in enumerate(ops):
        if op.f == "put":
            puts = (op.value if op.type == OK else op.invoke_value)["puts"]
            for k, v in puts:
                written[(k, v)] = (i, op)
            if op.type == OK:
                rev = op.value["revision"]
                for k, v in puts:
                    learn(rev, k, "put", v, None, None, i)
        elif op.f == "delete" and op.type == OK and op.value.get("deleted"):
            learn(op.value["revision"], op.value["key"], "delete", "", None, None, i)
        else:
            continue
        if op.type == OK and (op.f == "put" or op.value.get("deleted")):
            rev = op.value["revision"]
            if rev in by_revision:
                violations.append(
                    Violation("revision", f"two writes were acknowledged at revision {rev}", [by_revision[rev], i])
                )
            by_revision[rev] = i
    _real_time(ops, by_revision, violations)

    # ---- watch records ----
    for i, op in enumerate(ops):
        if op.f == "final-read" and op.type == OK:
            finals.append((i, op.value))
        if op.f != "watch":
            continue
        v = op.value
        sid = (v["watcher"], v["session"])
        if v["kind"] == "open":
            sessions[sid] = _Session(
                v["watcher"], v["session"], i, v["key"], v["range_end"], v["start"], v["prev_kv"], op.node
            )
        elif sid in sessions:
            sessions[sid].records.append((i, v))
            sessions[sid].times[i] = op.call
            for ev in v.get("events") or []:
                kind, key, value, mod, create, version, _ = ev
                if kind == "put":
                    learn(mod, key, kind, value, create, version, i)
                    w = written.get((key, value))
                    if w is None:
                        violations.append(
                            Violation("garbage", f"event put {key!r}={value!r} at {mod}: nobody wrote that value", [i])
                        )
                    elif w[1].type == FAIL:
                        violations.append(
                            Violation(
                                "aborted", f"event put {key!r}={value!r} at {mod} from a write that failed", [w[0], i]
                            )
                        )
                else:
                    learn(mod, key, kind, "", None, None, i)

    # ---- sessions ----
    compactions = sorted((op.call, op.invoke_value["revision"]) for op in ops if op.f == "compact" and op.type != FAIL)

    def compacted(t: int) -> int:
        """The highest revision a compaction asked for before t (maybe applied by then)."""
        return max((rev for call, rev in compactions if call < t), default=0)

    events_seen = 0
    for s in sessions.values():
        events_seen += _check_session(s, canon, violations, compacted)
    final_state = _check_finals(finals, canon, sessions, violations)
    counts: dict[str, int] = {}
    for v in violations:
        counts[v.type] = counts.get(v.type, 0) + 1
    first = violations[0] if violations else None
    return {
        "verdict": INVALID if violations else VALID,
        "checker": "watch guarantees (ordered, unique, atomic, reliable, resumable, bookmarkable) + canonical history",
        "sessions": len(sessions),
        "events_received": events_seen,
        "revisions": len({r for r, _ in canon}),
        "final_state": final_state,
        "violation_counts": counts,
        "violations": [v.to_json() for v in violations[:25]],
        "windows": [sorted(set(first.ops))] if first else [],
        "highlight": first.ops[-1:] if first else [],
        "explanation": f"{first.type}: {first.explanation}" if first else "",
    }


def _real_time(ops: list[Operation], by_revision: dict[int, int], violations: list[Violation]) -> None:
    """A write acknowledged before another began must have the lower revision."""
    writes = sorted((ops[i].ret or 0, rev, i) for rev, i in by_revision.items())
    calls = sorted((ops[i].call, rev, i) for rev, i in by_revision.items())
    best: tuple[int, int] | None = None  # (revision, op) of the highest revision acknowledged so far
    j = 0
    for call, rev, i in calls:
        while j < len(writes) and writes[j][0] < call:
            if best is None or writes[j][1] > best[0]:
                best = (writes[j][1], writes[j][2])
            j += 1
        if best is not None and best[0] >= rev:
            violations.append(
                Violation(
                    "real-time",
                    f"a write acknowledged at revision {best[0]} completed before one began that got {rev}",
                    [best[1], i],
                )
            )


def _check_session(
    s: _Session, canon: dict[tuple[int, str], _Canon], violations: list[Violation], compacted: Callable[[int], int]
) -> int:
    """Checks one stream; returns how many events it received."""
    records = [(i, v) for i, v in s.records if v["kind"] == "recv"]
    ops_of = [s.open_op]
    if not records:
        return 0
    first_i, first = records[0]
    if not first["created"]:
        violations.append(
            Violation(
                "protocol", f"{s.process} session {s.session}: first response is not 'created'", [s.open_op, first_i]
            )
        )
        return 0
    if first["canceled"]:
        return 0
    window_start = s.start if s.start > 0 else first["header"] + 1
    delivered: dict[tuple[int, str], int] = {}  # (rev, key) -> op
    last_rev = window_start - 1  # everything up to here has been delivered
    last_progress = 0
    last_event_op = first_i
    per_key: dict[str, list[Any]] = {}  # key -> the last event on it in this session
    count = 0
    for i, v in records[1:]:
        if v["canceled"]:
            break
        events = v.get("events") or []
        if v.get("progress"):
            last_rev = max(last_rev, v["header"])
            last_progress = max(last_progress, v["header"])
            continue
        if not events:
            continue
        count += len(events)
        revs = [e[3] for e in events]
        where = f"{s.process} session {s.session} on {s.node}"
        if revs != sorted(revs):
            violations.append(Violation("ordered", f"{where}: revisions out of order in one response: {revs}", [i]))
        if revs[0] <= last_rev and (revs[0], events[0][1]) not in delivered:  # a repeat is reported below
            if revs[0] <= last_progress:
                kind = "bookmarkable"
                text = f"event at revision {revs[0]} after a progress notification at {last_progress}"
            elif revs[0] == last_rev and any(r == last_rev for r, _ in delivered):
                kind = "atomic"
                text = f"the events of revision {revs[0]} were split over two responses"
            elif revs[0] < window_start:
                kind = "ordered"
                text = f"event at revision {revs[0]} before the start revision {window_start}"
            else:
                kind = "ordered"
                text = f"event at revision {revs[0]} after events up to revision {last_rev}"
            violations.append(Violation(kind, f"{where}: {text}", [last_event_op, i]))
        for ev in events:
            key, mod = ev[1], ev[3]
            if not s.in_scope(key):
                violations.append(Violation("filter", f"{where}: event for {key!r} outside the watched range", [i]))
            if (mod, key) in delivered:
                violations.append(
                    Violation("unique", f"{where}: event ({mod}, {key!r}) delivered twice", [delivered[(mod, key)], i])
                )
            delivered[(mod, key)] = i
            _check_versions(s, where, ev, per_key.get(key), canon, i, violations, compacted(s.times[i]))
            per_key[key] = ev
        last_rev = max(last_rev, revs[-1])
        last_event_op = i
        ops_of.append(i)
    # reliable: nothing of the scope missing between the start and how far the session got
    for (rev, key), c in canon.items():
        if window_start <= rev <= last_rev and s.in_scope(key) and (rev, key) not in delivered:
            same_rev = [k for (r, k) in delivered if r == rev]
            if same_rev:
                kind, text = "atomic", f"revision {rev} delivered without its event on {key!r} (got {same_rev})"
            elif rev <= last_progress:
                kind, text = (
                    "bookmarkable",
                    f"progress notified at {last_progress}, but {c.kind} {key!r} at {rev} missing",
                )
            else:
                kind, text = "reliable", f"missed {c.kind} {key!r} at revision {rev} (delivered up to {last_rev})"
            violations.append(
                Violation(
                    kind, f"{s.process} session {s.session} on {s.node}: {text}", [c.source, s.open_op, *ops_of[-3:]]
                )
            )
    return count


def _check_versions(
    s: _Session,
    where: str,
    ev: list[Any],
    before: list[Any] | None,
    canon: dict[tuple[int, str], _Canon],
    op: int,
    violations: list[Violation],
    compacted: int,
) -> None:
    kind, key, _, mod, create, version, prev = ev
    if kind == "put":
        if version == 1 and create != mod:
            violations.append(
                Violation("version", f"{where}: {key!r} created at {mod} claims create revision {create}", [op])
            )
        if before is not None:
            if before[0] == "put" and (create != before[4] or version != before[5] + 1):
                violations.append(
                    Violation(
                        "version",
                        f"{where}: {key!r} at {mod} has create {create} version {version} after create "
                        f"{before[4]} version {before[5]} at {before[3]}",
                        [op],
                    )
                )
            if before[0] == "delete" and (version != 1 or create != mod):
                violations.append(
                    Violation("version", f"{where}: {key!r} recreated at {mod} with version {version}", [op])
                )
    if not s.prev_kv:
        return
    if prev is None and mod - 1 < compacted:
        return  # etcd omits prev_kv when the previous revision is compacted
    if before is not None:
        expect = [before[2], before[3]] if before[0] == "put" else None
        if prev != expect:
            violations.append(
                Violation(
                    "prev_kv",
                    f"{where}: {kind} {key!r} at {mod} has prev_kv {prev}, the previous event on the key says {expect}",
                    [op],
                )
            )
        return
    if prev is None and (kind == "delete" or version > 1):
        violations.append(
            Violation("prev_kv", f"{where}: {kind} {key!r} at {mod} has no prev_kv, but the key existed before", [op])
        )
    if prev is not None:
        prev_value, prev_mod = prev
        c = canon.get((prev_mod, key))
        if prev_mod >= mod or (c is not None and (c.kind != "put" or c.value != prev_value)):
            violations.append(
                Violation(
                    "prev_kv",
                    f"{where}: {kind} {key!r} at {mod} has prev_kv {prev}, which is "
                    "not the key's value at that revision",
                    [op],
                )
            )
        between = [r for (r, k) in canon if k == key and prev_mod < r < mod]
        if between:
            violations.append(
                Violation(
                    "prev_kv",
                    f"{where}: {kind} {key!r} at {mod} has prev_kv from {prev_mod}, but "
                    f"the key changed at {sorted(between)}",
                    [op],
                )
            )


def _reached(s: _Session) -> int:
    """The revision up to which a session provably saw everything: its events and progress notifications
    (a response header alone proves nothing: etcd sets it to the store's revision mid-catch-up)."""
    reached = 0
    for _, v in s.records:
        if v.get("canceled"):
            break
        if v.get("progress"):
            reached = max(reached, v.get("header", 0))
        for e in v.get("events") or []:
            reached = max(reached, e[3])
    return reached


def _check_finals(
    finals: list[tuple[int, dict[str, Any]]],
    canon: dict[tuple[int, str], _Canon],
    sessions: dict[tuple[str, int], _Session],
    violations: list[Violation],
) -> dict[str, Any]:
    """Members agree on the final state, and it is where the canonical history ends.

    The history is only known as far as the final watches reached: a final read at a revision
    beyond that (a write whose client gave up committed after the watches ended) is not judged
    against it, and the result says so.
    """
    if not finals:
        return {"checked": False, "why": "no final read"}
    states = [(i, {kv[0]: tuple(kv[1:]) for kv in v["kvs"]}, v["revision"]) for i, v in finals]
    for i, state, _ in states[1:]:
        if state != states[0][1]:
            diff = sorted(k for k in set(state) | set(states[0][1]) if state.get(k) != states[0][1].get(k))
            violations.append(
                Violation("final-state", f"members disagree on the final value of {diff[:5]}", [states[0][0], i])
            )
    i, state, revision = states[0]
    # how far back the canonical history is complete: the final watches covered [start, head]
    finals_watched = [s for s in sessions.values() if s.process.startswith("final-watcher")]
    starts = [s.start for s in finals_watched if s.start > 0]
    complete_from = max(starts) if starts else None
    if complete_from is None:
        return {"checked": False, "why": "no final watch", "revision": revision}
    reached = max((_reached(s) for s in finals_watched), default=0)
    if reached < revision:
        return {
            "checked": False,
            "why": "final watches ended before the final read",
            "revision": revision,
            "watched_to": reached,
        }
    last: dict[str, tuple[int, _Canon]] = {}
    for (rev, key), c in canon.items():
        if rev <= revision and (key not in last or rev > last[key][0]):
            last[key] = (rev, c)
    for key in sorted(set(last) | set(state)):
        have = state.get(key)
        known = last.get(key)
        if known is None:
            if have is not None and have[1] >= complete_from:
                violations.append(
                    Violation("final-state", f"final {key!r}={have[0]!r} at {have[1]}: no such event", [i])
                )
            continue
        rev, c = known
        if rev < complete_from and (have is None or have[1] < complete_from):
            continue  # both before what the final watches covered
        if c.kind == "put" and (have is None or have[0] != c.value or have[1] != rev):
            violations.append(
                Violation(
                    "final-state",
                    f"final {key!r} is {have}, but its last event is put {c.value!r} at {rev}",
                    [c.source, i],
                )
            )
        if c.kind == "delete" and have is not None:
            violations.append(
                Violation("final-state", f"final {key!r} is {have}, but it was deleted at {rev}", [c.source, i])
            )
    return {"checked": True, "revision": revision, "watched_from": complete_from, "watched_to": reached}
