"""The store's history as the simulation knows it: every revision's changes, and who made them alike.

Every member applies every committed entry; the applier hands each batch's changes to the watch
hub (``Applier.on_changes``). The oracle sees those changes on every member: the first member to
make a revision records it, and every other member (and the same member after a restart, when it
replays its log) must make exactly the same changes at that revision: the same keys, values,
create and mod revisions, versions and leases. That is State Machine Safety at the level of the
store, beyond the log.

With the whole history known, serializable reads are checked exactly: a read served at revision R
must return the key as it was at R (a serializable read may be stale, but never inconsistent with
the revision it reports).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from chaos.history import OK, Operation

Change = tuple[int, bytes, bytes, int, int, int, int]  # (kind, key, value, create, mod, version, lease)


class KVOracle:
    def __init__(self, fail: Callable[[str], object]) -> None:
        self.fail = fail
        self.revisions: dict[int, tuple[Change, ...]] = {}
        self._keys: dict[bytes, tuple[list[int], list[tuple[bytes, int] | None]]] = {}

    def observe(self, who: str, changes: list[tuple[int, list[tuple[int, Any]]]]) -> None:
        for rev, evs in changes:
            made = tuple(
                (kind, kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kind, kv in evs
            )
            known = self.revisions.get(rev)
            if known is None:
                self.revisions[rev] = made
                for kind, key, value, _, mod, _, _ in made:
                    revs, states = self._keys.setdefault(key, ([], []))
                    revs.append(rev)
                    states.append((value, mod) if kind == 0 else None)
            elif known != made:
                self.fail(f"store divergence: {who} made different changes at revision {rev}: {made} vs {known}")

    def value_at(self, key: bytes, rev: int) -> tuple[bytes, int] | None:
        got = self._keys.get(key)
        if got is None:
            return None
        revs, states = got
        i = bisect_right(revs, rev)
        return states[i - 1] if i else None

    def check_sreads(self, ops: list[Operation]) -> tuple[int, str] | None:
        """The first serializable read that does not match the store at its revision: (op index, why)."""
        for i, op in enumerate(ops):
            if op.f != "sread" or op.type != OK:
                continue
            v = op.value
            rev = v["revision"]
            want = self.value_at(v["key"].encode(), rev)
            got = None if v["value"] is None else (v["value"].encode(), v["mod"])
            if got != want:
                return i, (
                    f"{v['member']} answered {v['key']!r} = {got} at revision {rev}, but the store held {want} then"
                )
        return None
