"""Strict serializability of list-append transactions, checked as Elle does (Kingsbury & Alvaro 2020).

Transactions append unique values to lists and read whole lists, several keys at once. Because
a list carries its own history, every read reveals the order in which values were appended to
that key, and so which transaction wrote each version and which versions a reader saw.

What is checked, per key and across keys:

1. Reads of a key are prefixes of one another: the longest read is the key's version order
   ("incompatible-order" otherwise). A read holds no value twice ("duplicate-elements"), only
   values somebody appended to that key ("garbage-read"), and none from a transaction that
   certainly failed ("aborted-read", G1a).
2. A dependency graph over the transactions, with an edge T1 -> T2 when
   - ww: T2 appended the version right after T1's on some key;
   - wr: T2 read a list whose last element T1 appended;
   - rw: T1 read a list to which T2 appended the next element (T1 did not see T2's write);
     committed appends nobody ever read come after every version that was read;
   - rt: T1 completed before T2 began (real time; this is what makes it *strict*).
3. A cycle in that graph is a violation: with ww edges only G0, with wr G1c, with one rw
   G-single, with more G2; a cycle that needs rt edges is a strict-serializability violation
   only (the suffix "-realtime"). Real-time order is encoded with O(n) barrier nodes, not n^2 edges.

This is sound (every reported anomaly is real) but, as Elle, not complete: appends nobody ever
read give only the inferences above. Transactions of unknown outcome (info) take part only
through the values of theirs that were read. The workload never reads and appends the same key
in one transaction, so internal consistency (G1b and friends) needs no check.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from chaos.history import FAIL, OK, Operation

VALID, INVALID = "valid", "invalid"


@dataclass
class Anomaly:
    type: str
    ops: list[int]  # indices into the operation list
    explanation: str
    steps: list[dict[str, Any]] = field(default_factory=list)  # for cycles: [{"from", "to", "edge"}]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "ops": self.ops, "explanation": self.explanation}
        if self.steps:
            out["cycle"] = self.steps
        return out


@dataclass
class Result:
    verdict: str
    anomalies: list[Anomaly]
    txns: int
    keys: int

    def summary(self, limit: int = 20) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for a in self.anomalies:
            counts[a.type] = counts.get(a.type, 0) + 1
        return {
            "verdict": self.verdict,
            "txns": self.txns,
            "keys": self.keys,
            "anomaly_counts": counts,
            "anomalies": [a.to_json() for a in self.anomalies[:limit]],
        }


class _Graph:
    """Nodes 0..n-1 are operations; larger ids are real-time barriers."""

    def __init__(self, n_ops: int) -> None:
        self.n_ops = n_ops
        self.n = n_ops
        self.out: dict[int, dict[int, str]] = {}

    def barrier(self) -> int:
        self.n += 1
        return self.n - 1

    def edge(self, a: int, b: int, label: str) -> None:
        if a == b:
            return
        self.out.setdefault(a, {}).setdefault(b, label)

    def sccs(self) -> list[list[int]]:
        """Strongly connected components with more than one node (iterative Tarjan)."""
        index: dict[int, int] = {}
        low: dict[int, int] = {}
        on_stack: set[int] = set()
        stack: list[int] = []
        found: list[list[int]] = []
        counter = 0
        for root in list(self.out):
            if root in index:
                continue
            work = [(root, iter(self.out.get(root, {})))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                v, it = work[-1]
                advanced = False
                for w in it:
                    if w not in index:
                        index[w] = low[w] = counter
                        counter += 1
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(self.out.get(w, {}))))
                        advanced = True
                        break
                    if w in on_stack:
                        low[v] = min(low[v], index[w])
                if advanced:
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(comp)
        return found

    def cycle_in(self, comp: list[int]) -> list[tuple[int, int, str]]:
        """A shortest cycle through an operation of the component, as (from, to, label) steps."""
        members = set(comp)
        best: list[tuple[int, int, str]] | None = None
        for start in [v for v in comp if v < self.n_ops][:20]:
            prev: dict[int, tuple[int, str]] = {}
            queue = deque([start])
            seen = {start}
            hit = False
            while queue and not hit:
                v = queue.popleft()
                for w, label in self.out.get(v, {}).items():
                    if w not in members:
                        continue
                    if w == start:
                        prev[start] = (v, label)
                        hit = True
                        break
                    if w not in seen:
                        seen.add(w)
                        prev[w] = (v, label)
                        queue.append(w)
            if not hit:
                continue
            path = []
            node = start
            while True:
                p, label = prev[node]
                path.append((p, node, label))
                node = p
                if node == start:
                    break
            path.reverse()
            if best is None or len(path) < len(best):
                best = path
        return best or []


def _compress(steps: list[tuple[int, int, str]], n_ops: int) -> list[tuple[int, int, str]]:
    """Chains through barrier nodes become single rt steps between operations."""
    out = []
    pending_from: int | None = None
    for a, b, label in steps:
        if a < n_ops and b < n_ops:
            out.append((a, b, label))
        elif a < n_ops:
            pending_from = a
        elif b < n_ops:
            out.append((pending_from if pending_from is not None else a, b, "rt"))
            pending_from = None
    return out


def _classify(labels: list[str]) -> str:
    rw = labels.count("rw")
    names = {0: "G1c" if "wr" in labels else "G0", 1: "G-single"}
    base = names.get(rw, "G2")
    return base + ("-realtime" if "rt" in labels else "")


def check(ops: list[Operation]) -> Result:
    anomalies: list[Anomaly] = []
    txns = [i for i, op in enumerate(ops) if op.f == "txn"]
    writer: dict[tuple[Any, int], int] = {}  # (key, value) -> op index
    failed_writer: dict[tuple[Any, int], int] = {}
    reads: dict[Any, list[tuple[int, list[int]]]] = {}  # key -> [(op, list)]
    for i in txns:
        op = ops[i]
        txn = op.value["txn"] if op.type == OK else op.invoke_value["txn"]
        for f, key, v in txn:
            if f == "append":
                (failed_writer if op.type == FAIL else writer)[(key, v)] = i
            elif op.type == OK:
                reads.setdefault(key, []).append((i, list(v or [])))
    graph = _Graph(len(ops))
    committed_by_key: dict[Any, list[tuple[int, int]]] = {}  # key -> [(value, op)] of ok appends
    for (k, v), i in writer.items():
        if ops[i].type == OK:
            committed_by_key.setdefault(k, []).append((v, i))
    keys = set(reads) | {k for k, _ in writer}
    for key in keys:
        key_reads = reads.get(key, [])
        order: list[int] = max((lst for _, lst in key_reads), key=len, default=[])
        longest = next((j for j, other in key_reads if other is order), None)
        prefix: list[bool] = []
        for i, lst in key_reads:
            is_prefix = lst == order[: len(lst)]
            prefix.append(is_prefix)
            if is_prefix and lst is not order:
                continue  # its elements are the longest read's, checked once below
            if len(set(lst)) != len(lst):
                dups = sorted({v for v in lst if lst.count(v) > 1})
                anomalies.append(Anomaly("duplicate-elements", [i], f"read of {key!r} holds {dups} more than once"))
            if not is_prefix:
                anomalies.append(
                    Anomaly(
                        "incompatible-order",
                        [longest, i] if longest is not None else [i],
                        f"reads of {key!r} disagree on the order of appends: {_short(lst)} is not a prefix of "
                        f"{_short(order)}",
                    )
                )
            for v in lst:
                if (key, v) in failed_writer:
                    anomalies.append(
                        Anomaly(
                            "aborted-read",
                            [failed_writer[(key, v)], i],
                            f"read of {key!r} saw {v}, appended by a transaction that failed",
                        )
                    )
                elif (key, v) not in writer:
                    anomalies.append(Anomaly("garbage-read", [i], f"read of {key!r} saw {v}, which nobody appended"))
        # ww along the version order
        writers = [writer.get((key, v)) for v in order]
        for a, b in itertools.pairwise(writers):
            if a is not None and b is not None:
                graph.edge(a, b, "ww")
        # committed appends nobody read come after every version that was
        seen = set(order)
        unread = [i for v, i in committed_by_key.get(key, []) if v not in seen]
        if writers and writers[-1] is not None:
            for w in unread:
                graph.edge(writers[-1], w, "ww")
        for (i, lst), is_prefix in zip(key_reads, prefix, strict=True):
            if not is_prefix:
                continue
            if lst:
                w = writers[len(lst) - 1]
                if w is not None:
                    graph.edge(w, i, "wr")
            if len(lst) < len(order):
                nxt = writers[len(lst)]
                if nxt is not None:
                    graph.edge(i, nxt, "rw")
            else:
                for w in unread:
                    graph.edge(i, w, "rw")
    _real_time_edges(graph, ops, txns)
    for comp in graph.sccs():
        steps = _compress(graph.cycle_in(comp), graph.n_ops)
        if not steps:
            continue
        labels = [label for _, _, label in steps]
        kind = _classify(labels)
        involved = [a for a, _, _ in steps]
        text = " -> ".join(f"op {a} -{label}->" for a, _, label in steps) + f" op {steps[0][0]}"
        anomalies.append(
            Anomaly(
                kind, involved, f"dependency cycle: {text}", [{"from": a, "to": b, "edge": lb} for a, b, lb in steps]
            )
        )
    return Result(INVALID if anomalies else VALID, anomalies, len(txns), len(keys))


def _real_time_edges(graph: _Graph, ops: list[Operation], txns: list[int]) -> None:
    """T1 -> T2 whenever T1 returned before T2 was invoked, through a chain of barrier nodes."""
    events = []
    for i in txns:
        op = ops[i]
        if op.type == FAIL:
            continue
        events.append((op.call, 0, i))  # invocations before returns at the same instant: not ordered
        if op.ret is not None and op.type == OK:
            events.append((op.ret, 1, i))
    events.sort()
    current: int | None = None
    used = True  # whether an invocation hangs off the current barrier since it was made
    for _, kind, i in events:
        if kind == 1:
            if used or current is None:
                b = graph.barrier()
                if current is not None:
                    graph.edge(current, b, "rt")
                current, used = b, False
            graph.edge(i, current, "rt")
        elif current is not None:
            graph.edge(current, i, "rt")
            used = True


def _short(values: list[int], n: int = 8) -> str:
    if len(values) <= n:
        return str(values)
    return f"[...{len(values) - n} more, {', '.join(map(str, values[-n:]))}]"
