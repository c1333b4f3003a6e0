"""Lock histories: fencing must make the lock safe; without fencing, the lock is shown not to be.

The ``lock`` workload appends one entry per critical section to two lists, one unfenced and one
fenced by the lock key's create revision (see ``chaos.workloads.lock``). After the run every
member's final lists are read.

Violations (the run is invalid):

- members disagree on the final lists;
- the fenced list is not exactly the fenced appends that were acknowledged: one is missing or
  there twice, one that was refused or never made is there, or the list is not in token order;
- an acknowledged fenced append did not land right after the list it read (its read-modify-write
  was interleaved with another: fencing failed to exclude it);
- a lock acquired after another was acquired (in real time) got a lower token.

Reported, not violations (locks built on leases promise no more): lock holds that overlapped in
time, and what they did to the unfenced list (acknowledged appends lost, or there twice), with
a window of operations that shows one such lost update.
"""

from __future__ import annotations

import itertools
from typing import Any

from chaos.history import FAIL, INFO, OK, Operation

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"


def check(ops: list[Operation]) -> dict[str, Any]:
    violations: list[dict[str, Any]] = []

    def bad(kind: str, text: str, involved: list[int]) -> None:
        violations.append({"type": kind, "explanation": text, "ops": involved})

    finals = [(i, op.value) for i, op in enumerate(ops) if op.f == "final-read" and op.type == OK]
    fenced = {op.value["entry"]: (i, op) for i, op in enumerate(ops) if op.f == "fenced"}
    unfenced = {op.value["entry"]: (i, op) for i, op in enumerate(ops) if op.f == "unfenced"}
    acquires = [(i, op) for i, op in enumerate(ops) if op.f == "acquire" and op.type == OK]

    # tokens follow real time
    by_ret = sorted((op.ret or 0, op.value["token"], i, op.value["lease"]) for i, op in acquires)
    j, best = 0, None
    for i, op in sorted(acquires, key=lambda x: x[1].call):
        while j < len(by_ret) and by_ret[j][0] < op.call:
            if best is None or by_ret[j][1] > best[0]:
                best = (by_ret[j][1], by_ret[j][2], by_ret[j][3])
            j += 1
        if best is not None and best[0] >= op.value["token"] and best[2] != op.value["lease"]:
            bad(
                "token-order",
                f"lock acquired with token {best[0]} before an acquisition began that got token {op.value['token']}",
                [best[1], i],
            )

    result: dict[str, Any] = {"checker": "lock: fenced resource exact, tokens in real-time order"}
    if not finals:
        result.update({"verdict": UNKNOWN, "explanation": "no final read of the resources"})
        return result
    first_i, first = finals[0]
    for i, v in finals[1:]:
        if v != first:
            bad("final-state", "members disagree on the final lists", [first_i, i])
    final_fenced, final_unfenced = first["fenced"], first["unfenced"]

    # the fenced list: exactly the acknowledged fenced appends, in token order, each right after what it read
    position = {}
    for pos, e in enumerate(final_fenced):
        if e in position:
            bad("fenced-duplicate", f"entry {e} is in the fenced list twice", [fenced.get(e, (first_i,))[0], first_i])
        position[e] = pos
        if e not in fenced:
            bad("fenced-garbage", f"entry {e} in the fenced list was never appended", [first_i])
        elif fenced[e][1].type == FAIL:
            bad("fenced-refused", f"entry {e} was refused by the fence but is in the list", [fenced[e][0], first_i])
    tokens = [fenced[e][1].value["token"] for e in final_fenced if e in fenced]
    for a, b in itertools.pairwise(tokens):
        if b < a:
            bad("fenced-order", f"fenced list has token {b} after token {a}", [first_i])
            break
    for e, (i, op) in fenced.items():
        if op.type != OK:
            continue
        if e not in position:
            bad(
                "fenced-lost",
                f"acknowledged fenced append {e} (token {op.value['token']}) is not in the list",
                [i, first_i],
            )
            continue
        read = op.value["read"]
        if final_fenced[: len(read) + 1] != [*read, e]:
            bad(
                "fenced-interleaved",
                f"fenced append {e} read a list of {len(read)} entries but landed at position "
                f"{position[e]} after others",
                [i, first_i],
            )

    # without fencing: overlapping holds and lost updates (reported)
    holds = _holds(ops)
    overlaps = []
    for a in range(len(holds)):
        for b in range(a + 1, len(holds)):
            (_, end1, _, i1, t1), (start2, _, _, i2, t2) = holds[a], holds[b]
            if start2 >= end1:
                break
            if t1 != t2:
                overlaps.append((i1, i2))
    lost = [e for e, (_, op) in unfenced.items() if op.type == OK and e not in final_unfenced]
    dup = sorted({e for e in final_unfenced if final_unfenced.count(e) > 1})
    refused = sum(1 for _, op in fenced.values() if op.type == FAIL and "refused" in (op.value or {}))
    stalls = sum(1 for _, op in unfenced.values() if op.type == OK and op.value.get("stalled"))
    demo = _demo(ops, unfenced, fenced, lost) if lost else None
    result.update(
        {
            "verdict": INVALID if violations else VALID,
            "violations": violations[:25],
            "violation_counts": _counts(violations),
            "acquisitions": len(acquires),
            "fenced": {
                "appends_ok": sum(1 for _, op in fenced.values() if op.type == OK),
                "refused_by_fence": refused,
                "unknown": sum(1 for _, op in fenced.values() if op.type == INFO),
                "final_length": len(final_fenced),
            },
            "unfenced": {
                "appends_ok": sum(1 for _, op in unfenced.values() if op.type == OK),
                "stalled_holders": stalls,
                "overlapping_holds": len(overlaps),
                "lost_updates": len(lost),
                "duplicates": len(dup),
                "final_length": len(final_unfenced),
            },
            "unsafe_without_fencing": bool(lost or dup),
            "windows": [sorted(set(violations[0]["ops"]))] if violations else [],
            "highlight": violations[0]["ops"][-1:] if violations else [],
            "explanation": f"{violations[0]['type']}: {violations[0]['explanation']}" if violations else "",
        }
    )
    if demo is not None:
        result["demo"] = demo
    return result


def _holds(ops: list[Operation]) -> list[tuple[int, int, Any, int, int]]:
    """(start, end, process, acquire op, token) of every acquired lock, by start."""
    open_: dict[Any, tuple[int, int, int]] = {}
    out = []
    for i, op in enumerate(ops):
        if op.f == "acquire" and op.type == OK:
            open_[(op.value["lease"], op.value["token"])] = (op.ret or op.call, i, op.value["token"])
        elif op.f == "release":
            hold = (op.invoke_value["lease"], op.invoke_value["token"])
            if hold in open_:
                start, ai, token = open_.pop(hold)
                out.append((start, op.call, op.process, ai, token))
    for p, (start, ai, token) in open_.items():
        out.append((start, max((o.ret or o.call) for o in ops), p, ai, token))
    return sorted(out)


def _demo(
    ops: list[Operation],
    unfenced: dict[int, tuple[int, Operation]],
    fenced: dict[int, tuple[int, Operation]],
    lost: list[int],
) -> dict[str, Any] | None:
    """A lost unfenced update and the write that erased it, with the operations of both holds.

    Preferably a successor's entry erased by a holder that stalled past its lease; failing that,
    any write that read a list without the entry and landed after it.
    """
    for strict in (True, False):
        for entry in lost:
            _, victim = unfenced[entry]
            for e, (i, op) in unfenced.items():
                if e == entry or op.type != OK or op.ret is None or victim.ret is None:
                    continue
                if entry in op.value["read"] or not (op.call < victim.ret < op.ret):
                    continue
                if strict and (not op.value.get("stalled") or victim.value["token"] <= op.value["token"]):
                    continue
                return _demo_of(ops, fenced, entry, unfenced[entry][0], i, e)
    return None


def _demo_of(
    ops: list[Operation], fenced: dict[int, tuple[int, Operation]], entry: int, victim_i: int, culprit_i: int, e: int
) -> dict[str, Any]:
    victim, op = ops[victim_i], ops[culprit_i]
    tokens = {op.value["token"], victim.value["token"]}
    window = [
        j
        for j, o in enumerate(ops)
        if o.f in ("acquire", "unfenced", "fenced", "release")
        and (o.value or {}).get("token", (o.invoke_value or {}).get("token")) in tokens
    ]
    refused = fenced.get(e)
    note = ""
    if refused is not None and refused[1].type == FAIL and "fence" in (refused[1].value or {}):
        note = f" Its fenced update was refused: the fence already held token {refused[1].value['fence'].lstrip('0')}."
    how = (
        "read the unfenced list, then stalled for longer than its lease; the lease expired, the lock passed on, and"
        if op.value.get("stalled")
        else "read the unfenced list while it believed it held the lock; meanwhile"
    )
    return {
        "window": window,
        "highlight": [culprit_i, victim_i],
        "explanation": f"Without fencing, an acknowledged update was lost. The holder with token {op.value['token']} "
        f"{how} the holder with token {victim.value['token']} appended entry {entry}. The first holder then wrote "
        f"back the list it had read plus its own entry, erasing entry {entry}." + note,
    }


def _counts(violations: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in violations:
        out[v["type"]] = out.get(v["type"], 0) + 1
    return out
