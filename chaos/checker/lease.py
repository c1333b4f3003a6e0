"""Lease safety: what a client may rely on about a lease and the keys it holds, checked on a history.

Operations (values as recorded by ``tests/sim``'s workload; any client can record them):

- ``lease-grant`` ``{lease, ttl}`` -> ``{lease, ttl}`` (the granted TTL);
- ``lease-put`` ``{key, value, lease}``: a key put under the lease (every key is put once);
- ``lease-keepalive`` ``{lease}`` -> ``{lease, ttl}`` (0: the lease does not exist);
- ``lease-revoke`` ``{lease}``;
- ``lease-read`` ``{key}`` -> ``{key, value, lease}`` (value None: absent), a linearizable read;
  those of the process ``final_process`` are the final reads, made after healing.

A renewal (a grant, or a keep-alive answered with a TTL) that was invoked at ``s`` promises that
the lease lives until at least ``s + ttl``: the member that renewed it did so after ``s``. Checked:

- **no early expiry**: a read that began after the key's put was acknowledged and ended before the
  promise of a renewal acknowledged before it began finds the key; a keep-alive that ended before
  such a promise finds the lease; unless a revoke of the lease may have run by then.
- **revoked stays revoked**: after a revoke was acknowledged, or a keep-alive found the lease gone,
  or a read found an acknowledged key of it gone, no keep-alive renews it, no put under it
  succeeds, and no read finds one of its keys.
- **expiry happens**: a final read that finds a key of a lease whose last renewal attempt (a
  keep-alive of unknown outcome counts as taking ``max_delay`` to land) plus its TTL plus ``grace``
  is past is a lease that never expired (and one that was revoked, a revoke that did nothing).
  A new leader's lessor gives every lease its full TTL again (etcd's ``Promote``), so a leader
  change (``promotions``: when a lessor was promoted, on the history's clock) counts as a renewal.
- **all keys go together**: the final reads find all of a lease's acknowledged keys, or none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chaos.history import FAIL, INFO, OK, Operation

VALID, INVALID = "valid", "invalid"
FINAL_PROCESS = 4_000_000


@dataclass
class _Lease:
    renewals: list[tuple[int, int, int]] = field(default_factory=list)  # (call, ret, ttl) acknowledged
    attempts: list[int] = field(default_factory=list)  # when each renewal may have landed, at the latest
    ttl: int = 0
    revokes: list[Operation] = field(default_factory=list)  # not failed
    gone: int | None = None  # the earliest time the lease is known gone
    gone_op: int = -1
    keys: dict[str, int] = field(default_factory=dict)  # acknowledged key -> its put's op index


def check(
    ops: list[Operation], grace: float = 4.0, max_delay: float = 3.0, promotions: list[int] | None = None
) -> dict[str, Any]:
    ns = 1_000_000_000
    leases: dict[int, _Lease] = {}
    key_lease: dict[str, int] = {}
    put_ret: dict[str, int] = {}
    violations: list[dict[str, Any]] = []

    def lease(lid: int) -> _Lease:
        got = leases.get(lid)
        if got is None:
            got = leases[lid] = _Lease()
        return got

    def violation(kind: str, text: str, op_ids: list[int]) -> None:
        violations.append({"type": kind, "explanation": text, "ops": op_ids})

    def landed(op: Operation) -> int:
        return op.ret if op.ret is not None else op.call + int(max_delay * ns)

    # what we know about each lease
    for i, op in enumerate(ops):
        if op.type == FAIL:
            continue
        if op.f == "lease-grant":
            lid = op.invoke_value["lease"]
            lease(lid).attempts.append(landed(op))
            lease(lid).ttl = max(lease(lid).ttl, op.invoke_value["ttl"])
            if op.type == OK:
                lease(lid).ttl = op.value["ttl"]
                lease(lid).renewals.append((op.call, op.ret or op.call, op.value["ttl"]))
        elif op.f == "lease-put":
            lid = op.invoke_value["lease"]
            key_lease[op.invoke_value["key"]] = lid
            if op.type == OK:
                lease(lid).keys[op.invoke_value["key"]] = i
                put_ret[op.invoke_value["key"]] = op.ret or op.call
        elif op.f == "lease-keepalive":
            lid = op.invoke_value["lease"]
            lease(lid).attempts.append(landed(op))
            if op.type == OK and op.value["ttl"] > 0:
                lease(lid).renewals.append((op.call, op.ret or op.call, op.value["ttl"]))
        elif op.f == "lease-revoke":
            lease(op.invoke_value["lease"]).revokes.append(op)

    def promised(lid: int, before: int) -> tuple[int, int]:
        """(until when, by which renewal's call) the renewals acknowledged before `before` promise."""
        best = (0, 0)
        for call, ret, ttl in leases[lid].renewals:
            if ret < before:
                best = max(best, (call + ttl * ns, call))
        return best

    def revoke_by(lid: int, t: int) -> bool:
        return any(r.call < t for r in leases[lid].revokes)

    # no early expiry; and learn when each lease is known gone
    for i, op in enumerate(ops):
        if op.type != OK:
            continue
        if op.f == "lease-keepalive" and op.value["ttl"] <= 0:
            lid = op.invoke_value["lease"]
            until, by = promised(lid, op.call)
            if op.ret is not None and op.ret < until and not revoke_by(lid, op.ret):
                violation(
                    "early-expiry",
                    f"a keep-alive found lease {lid:x} gone at {op.ret / ns:.3f}s, but a renewal at {by / ns:.3f}s "
                    f"promised it until {until / ns:.3f}s",
                    [i],
                )
        elif op.f == "lease-read" and op.value.get("value") is None:
            key = op.invoke_value["key"]
            lid = key_lease.get(key)
            if lid is None or key not in leases[lid].keys or put_ret[key] >= op.call:
                continue
            until, by = promised(lid, op.call)
            if op.ret is not None and op.ret < until and not revoke_by(lid, op.ret):
                violation(
                    "early-expiry",
                    f"{key!r} of lease {lid:x} was gone at {op.ret / ns:.3f}s, but a renewal at {by / ns:.3f}s "
                    f"promised the lease until {until / ns:.3f}s",
                    [leases[lid].keys[key], i],
                )

    for i, op in enumerate(ops):
        if op.type != OK or op.ret is None:
            continue
        lid = None
        if op.f == "lease-revoke" or (op.f == "lease-keepalive" and op.value["ttl"] <= 0):
            lid = op.invoke_value["lease"]
        elif op.f == "lease-read" and op.value.get("value") is None:
            key = op.invoke_value["key"]
            k_lid = key_lease.get(key)
            if k_lid is not None and key in leases[k_lid].keys and put_ret[key] < op.call:
                lid = k_lid
        if lid is not None:
            known = leases[lid]
            if known.gone is None or op.ret < known.gone:
                known.gone, known.gone_op = op.ret, i

    # revoked stays revoked
    for i, op in enumerate(ops):
        if op.type != OK:
            continue
        if op.f in ("lease-keepalive", "lease-put"):
            lid = op.invoke_value["lease"]
        elif op.f == "lease-read" and op.value.get("value") is not None:
            lid = key_lease.get(op.invoke_value["key"], 0)
        else:
            continue
        known = leases.get(lid)
        if known is None or known.gone is None or op.call <= known.gone:
            continue
        if op.f == "lease-keepalive" and op.value["ttl"] > 0:
            violation("resurrected", f"lease {lid:x} was renewed after it was gone", [known.gone_op, i])
        elif op.f == "lease-put":
            violation(
                "resurrected", f"a put under lease {lid:x} succeeded after the lease was gone", [known.gone_op, i]
            )
        elif op.f == "lease-read":
            violation(
                "resurrected",
                f"{op.invoke_value['key']!r} of lease {lid:x} was read after the lease was gone",
                [known.gone_op, i],
            )

    # expiry happens; all keys go together
    finals: dict[int, dict[str, tuple[bool, int]]] = {}
    for i, op in enumerate(ops):
        if op.f != "lease-read" or op.process != FINAL_PROCESS or op.type != OK:
            continue
        key = op.invoke_value["key"]
        lid = key_lease.get(key)
        if lid is None or key not in leases[lid].keys:
            continue
        present = op.value.get("value") is not None
        finals.setdefault(lid, {})[key] = (present, i)
        if not present:
            continue
        known = leases[lid]
        last = max(known.attempts, default=0)
        last = max([last] + [p for p in promotions or () if p <= op.call])
        acked_revokes = [r for r in known.revokes if r.type == OK]
        if acked_revokes:
            violation("not-revoked", f"{key!r} outlived the acknowledged revoke of lease {lid:x}", [i])
        elif op.call > last + int((known.ttl + grace) * ns):
            violation(
                "never-expired",
                f"{key!r} of lease {lid:x} is still there at {op.call / ns:.3f}s; its last renewal attempt (or leader "
                f"change) landed by "
                f"{last / ns:.3f}s and its TTL is {known.ttl}s",
                [known.keys[key], i],
            )
    for lid, seen in finals.items():
        present = {k for k, (p, _) in seen.items() if p}
        if present and len(present) != len(seen):
            violation(
                "partial",
                f"lease {lid:x} lost some of its keys but not all: {sorted(set(seen) - present)} gone, "
                f"{sorted(present)} there",
                [i for _, i in seen.values()],
            )

    counts = {
        "leases": len(leases),
        "renewals": sum(len(x.renewals) for x in leases.values()),
        "revoked": sum(1 for x in leases.values() if any(r.type == OK for r in x.revokes)),
        "gone": sum(1 for x in leases.values() if x.gone is not None),
        "final_keys": sum(len(v) for v in finals.values()),
        "info": sum(1 for op in ops if op.f.startswith("lease-") and op.type == INFO),
    }
    first = violations[0] if violations else None
    return {
        "verdict": INVALID if violations else VALID,
        "checker": "lease safety (no early expiry, revoked stays revoked, expiry happens, all keys go together)",
        "counts": counts,
        "violations": violations[:25],
        "explanation": f"{first['type']}: {first['explanation']}" if first else "",
    }
