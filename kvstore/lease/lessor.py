"""The lessor: the table of leases, which keys each lease holds, and which member expires them.

Two halves, as in etcd's ``lease/lessor.go``:

- **Replicated state**, changed only by the applier in log order and identical on every member:
  each lease's id, granted TTL and last checkpointed remaining TTL (persisted in the backend's
  ``lease`` bucket, in the applier's write transaction, so the bucket always matches the applied
  index and travels with snapshots), and the key <-> lease maps (not persisted: rebuilt from the
  keys' ``lease`` field when the store opens, through the ``LeaseHooks`` the store calls).
  ``grant``, ``revoke`` and ``checkpoint`` never read the clock to decide anything replicated.
- **Primary state**, local to the member that leads: each lease's expiry instant on a monotonic
  clock, a queue of expiries and a queue of due checkpoints. ``promote`` starts it (every lease
  gets its remaining TTL plus the election timeout from now), ``demote`` drops it (every lease
  lives forever until someone leads again). Only the primary renews leases and finds expired
  ones; expiring one means proposing a revoke through the log (``kvstore.lease.runner``).

A lease's ``remaining_ttl`` is 0 until the primary checkpoints it; a new primary then counts from
the checkpointed value instead of the full TTL, so long leases are not extended indefinitely by
repeated leader changes. Checkpoints are persisted (etcd 3.6 behaviour; 3.4 only with a flag).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterator

import msgpack

from kvstore.lease.errors import LeaseExistsError, LeaseExpired, LeaseNotFoundError, LeaseTTLTooLargeError, NotPrimary
from kvstore.lease.expiry import LeaseQueue
from kvstore.mvcc.backend import Backend, Txn
from kvstore.mvcc.store import WriteTxn
from raft.errors import StartupError

MAX_LEASE_TTL = 9_000_000_000  # etcd's MaxLeaseTTL, seconds
FOREVER = math.inf  # the expiry of every lease on a member that is not the primary
DEFAULT_CHECKPOINT_INTERVAL = 300.0  # etcd's defaultLeaseCheckpointInterval: 5 minutes
LEASE_REVOKE_RATE = 1000  # etcd's leaseRevokeRate: expired leases revoked per second at most
LEASE_CHECKPOINT_RATE = 1000  # etcd's leaseCheckpointRate: checkpoints proposed per second at most
MAX_CHECKPOINT_BATCH = 1000  # etcd's maxLeaseCheckpointBatchSize: checkpoints in one log entry

_I64 = struct.Struct(">q")
_NS = 1_000_000_000


def min_lease_ttl(heartbeat_ms: int = 100, election_ms: int = 1000) -> int:
    """etcd's minimum lease TTL in seconds: 1.5 election timeouts, counted in whole ticks, rounded up.

    etcd computes ``(3 * ElectionTicks / 2) * heartbeat`` with integer ticks, then ``ceil`` in
    seconds; members of one cluster share these flags, so every member raises TTLs alike.
    """
    ticks = election_ms // heartbeat_ms
    min_ms = (3 * ticks) // 2 * heartbeat_ms
    return -(-min_ms // 1000)


def lease_key(lease_id: int) -> bytes:
    """The bucket key of a lease: its id as 8 big-endian bytes, two's complement (etcd's int64ToBytes)."""
    return _I64.pack(lease_id)


class Lease:
    """One lease: replicated id, ttl and checkpointed remaining ttl; primary-only expiry; attached keys."""

    __slots__ = ("expiry", "id", "keys", "remaining_ttl", "ttl")

    def __init__(self, lease_id: int, ttl: int, remaining_ttl: int = 0) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.remaining_ttl = remaining_ttl  # 0: never checkpointed, the full ttl applies
        self.expiry = FOREVER
        self.keys: set[bytes] = set()

    def checkpointed_ttl(self) -> int:
        """What a new primary counts from: the checkpointed remaining TTL if any, else the TTL."""
        return self.remaining_ttl if self.remaining_ttl > 0 else self.ttl

    def remaining(self, now: float) -> float:
        """Seconds left (FOREVER when no member is counting)."""
        return self.expiry - now

    def encode(self) -> bytes:
        return msgpack.packb((self.id, self.ttl, self.remaining_ttl))

    def __repr__(self) -> str:
        return f"Lease(id={self.id:#x}, ttl={self.ttl}, remaining_ttl={self.remaining_ttl}, keys={len(self.keys)})"


class Lessor:
    """The lease table of one member; implements the store's ``LeaseHooks`` and the applier's ``LeaseLookup``."""

    def __init__(
        self,
        backend: Backend,
        min_ttl: int | None = None,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_ttl = min_lease_ttl() if min_ttl is None else min_ttl
        self.checkpoint_interval = checkpoint_interval
        self.clock = clock
        # called with a lease id once its revoke is applied (the runner wakes renewals waiting on it)
        self.on_revoke: Callable[[int], None] | None = None
        self._leases: dict[int, Lease] = {}
        self._key_lease: dict[bytes, int] = {}
        self._primary = False
        self._expiries = LeaseQueue()
        self._checkpoints = LeaseQueue()
        self.backend = backend
        self._load()

    @property
    def _db(self) -> object:
        return self.backend.dbs[b"lease"]  # looked up each time: a defragmentation reopens the backend

    # ---- opening ----

    def _load(self) -> None:
        backend = self.backend
        with backend.begin_read() as txn:
            for raw_key, raw in txn.cursor(db=self._db):
                try:
                    lease_id, ttl, remaining_ttl = msgpack.unpackb(raw)
                    if not all(isinstance(v, int) for v in (lease_id, ttl, remaining_ttl)):
                        raise ValueError("fields are not integers")
                    if lease_key(lease_id) != raw_key:
                        raise ValueError(f"stored under key {raw_key.hex()}")
                except (ValueError, TypeError, msgpack.UnpackException, struct.error) as exc:
                    raise StartupError(
                        f"backend database {backend.file} is corrupt: bad lease record {raw_key!r}: {exc}"
                    ) from exc
                # a lease granted under a smaller minimum TTL gets today's minimum, as etcd does
                self._leases[lease_id] = Lease(lease_id, max(ttl, self.min_ttl), remaining_ttl)

    def reload(self, backend: Backend) -> None:
        """Starts over from another backend (a snapshot was installed); keys are re-attached by the store.

        Create the new ``KVStore`` after calling this: its restore attaches every leased key.
        """
        self.backend = backend
        self._leases = {}
        self._key_lease = {}
        self._expiries.clear()
        self._checkpoints.clear()
        self._load()
        if self._primary:
            now = self.clock()
            for lease in self._leases.values():
                self._refresh(lease, now, 0.0)

    # ---- what the store and the applier ask (LeaseHooks, LeaseLookup) ----

    def exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def lease_of(self, key: bytes) -> int:
        return self._key_lease.get(key, 0)

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:  # etcd logs "failed to attach" and goes on; the applier checks before a put
            return
        lease.keys.add(key)
        self._key_lease[key] = lease_id

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)
        if self._key_lease.get(key) == lease_id:
            del self._key_lease[key]

    # ---- replicated changes (called by kvstore.lease.apply, in log order) ----

    def grant(self, txn: Txn, lease_id: int, ttl: int) -> Lease:
        """Creates a lease (raising the TTL to the minimum) and persists it in txn."""
        if lease_id == 0:
            raise LeaseNotFoundError()
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLargeError()
        if lease_id in self._leases:
            raise LeaseExistsError()
        lease = Lease(lease_id, max(ttl, self.min_ttl))
        self._leases[lease_id] = lease
        txn.put(lease_key(lease_id), lease.encode(), db=self._db)
        if self._primary:
            self._refresh(lease, self.clock(), 0.0)
        return lease

    def revoke(self, w: WriteTxn, lease_id: int) -> None:
        """Deletes every key of the lease in w (one store revision) and the lease itself, in w's transaction."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        # sorted, so every member deletes in the same order (same sub revisions, same events)
        for key in sorted(lease.keys):
            w.delete_range(key, None)  # the store detaches each key through the hooks
        del self._leases[lease_id]
        w.txn.delete(lease_key(lease_id), db=self._db)
        for key in lease.keys:  # a key the store did not know (cannot happen unless the index is damaged)
            self._key_lease.pop(key, None)
        lease.keys.clear()
        self._expiries.remove(lease_id)
        self._checkpoints.remove(lease_id)
        if self.on_revoke is not None:
            self.on_revoke(lease_id)

    def checkpoint(self, txn: Txn, lease_id: int, remaining_ttl: int) -> None:
        """Records a lease's remaining TTL (0 clears it); unknown leases are ignored, as etcd does."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        lease.remaining_ttl = remaining_ttl
        txn.put(lease_key(lease_id), lease.encode(), db=self._db)
        if self._primary:
            self._schedule_checkpoint(lease, self.clock())

    # ---- reading ----

    def lookup(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def __len__(self) -> int:
        return len(self._leases)

    def __iter__(self) -> Iterator[Lease]:
        return iter(self._leases.values())

    def leases(self) -> list[Lease]:
        """Every lease, soonest expiry first (then by id, so the order is stable)."""
        return sorted(self._leases.values(), key=lambda lease: (lease.expiry, lease.id))

    def time_to_live(self, lease: Lease) -> int:
        """Whole seconds left, truncated toward zero (etcd's ``int64(Remaining().Seconds())``)."""
        left = lease.expiry - self.clock()
        if left == FOREVER:
            return (2**63 - 1) // _NS  # Go's time.Duration(math.MaxInt64) in seconds
        return int(left)

    # ---- the primary (the member that leads) ----

    @property
    def primary(self) -> bool:
        return self._primary

    def promote(self, extend: float) -> None:
        """Starts counting: every lease expires its checkpointed TTL plus extend seconds from now.

        With many leases, expiries are spread so no more than 3/4 of the revoke rate fall in any
        second (etcd's pile-up avoidance: a leader change must not expire a burst all at once).
        """
        self._primary = True
        now = self.clock()
        for lease in self._leases.values():
            self._refresh(lease, now, extend)
        if len(self._leases) < LEASE_REVOKE_RATE:
            return
        leases = self.leases()
        base_window = leases[0].remaining(now)
        next_window = base_window + 1.0
        expires = 0
        target_per_second = (3 * LEASE_REVOKE_RATE) // 4
        for lease in leases:
            remaining = lease.remaining(now)
            if remaining > next_window:
                base_window = remaining
                next_window = base_window + 1.0
                expires = 1
                continue
            expires += 1
            if expires <= target_per_second:
                continue
            # leases already n seconds past the window start need n seconds less of delay
            delay = expires / target_per_second - (remaining - base_window)
            next_window = base_window + delay
            self._refresh(lease, now, delay + extend)

    def demote(self) -> None:
        """Stops counting: no lease expires until some member is promoted."""
        self._primary = False
        for lease in self._leases.values():
            lease.expiry = FOREVER
        self._expiries.clear()
        self._checkpoints.clear()

    def renew(self, lease_id: int) -> tuple[int, bool]:
        """Restarts the lease's full TTL; returns (ttl, whether a checkpoint must clear its remaining TTL).

        Raises NotPrimary on a member that does not lead, LeaseNotFoundError for an unknown lease and
        LeaseExpired for one whose revoke is under way.
        """
        if not self._primary:
            raise NotPrimary()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        now = self.clock()
        if lease.expiry <= now:
            raise LeaseExpired()
        # etcd clears a checkpointed remaining TTL through the log before refreshing; the refresh
        # here uses the full TTL directly, and the clearing checkpoint follows asynchronously
        expiry = lease.expiry = now + lease.ttl
        # the queue may hold a lease earlier than its expiry (``expired`` moves it when it comes up),
        # never later: only a renewal that brings the expiry forward has to touch the heap
        queued = self._expiries.time_of(lease_id)
        if queued is None or expiry < queued:
            self._expiries.register_or_update(lease_id, expiry)
        return lease.ttl, lease.remaining_ttl > 0

    def expired(self, limit: int, retry_after: float) -> list[int]:
        """Up to limit leases past their expiry, soonest first (etcd's findExpiredLeases).

        Each one found is queued again retry_after seconds later, so a revoke lost on the way
        (a dropped proposal, a leader change) is proposed again, but not on every poll. A lease
        renewed since it was queued is only moved to its new expiry here, once per TTL at most,
        which keeps renewals (the hot path) off the heap.
        """
        if not self._primary:
            return []
        now = self.clock()
        found: list[int] = []
        queue = self._expiries
        while len(found) < limit:
            top = queue.peek()
            if top is None:
                break
            lease_id, when = top
            lease = self._leases.get(lease_id)
            if lease is None:
                queue.pop()
                continue
            if now < when:
                break
            if lease.expiry > now:  # renewed since it was queued: move it to its expiry
                queue.register_or_update(lease_id, lease.expiry)
                continue
            queue.register_or_update(lease_id, now + retry_after)
            found.append(lease_id)
        return found

    def due_checkpoints(self, limit: int = MAX_CHECKPOINT_BATCH) -> list[tuple[int, int]]:
        """(lease id, remaining whole seconds, rounded up) of up to limit leases whose checkpoint is due."""
        if not self._primary:
            return []
        now = self.clock()
        out: list[tuple[int, int]] = []
        queue = self._checkpoints
        while len(out) < limit:
            top = queue.peek()
            if top is None or top[1] > now:
                break
            lease_id = queue.pop()[0]
            lease = self._leases.get(lease_id)
            if lease is None or now >= lease.expiry:
                continue
            remaining = math.ceil(lease.expiry - now)
            if remaining >= lease.ttl:  # renewed since: nothing to record, look again later
                self._schedule_checkpoint(lease, now)
                continue
            out.append((lease_id, remaining))
        return out

    def _refresh(self, lease: Lease, now: float, extend: float) -> None:
        lease.expiry = now + extend + lease.checkpointed_ttl()
        self._expiries.register_or_update(lease.id, lease.expiry)
        self._schedule_checkpoint(lease, now)

    def _schedule_checkpoint(self, lease: Lease, now: float) -> None:
        if lease.checkpointed_ttl() > self.checkpoint_interval:
            self._checkpoints.register_or_update(lease.id, now + self.checkpoint_interval)
        else:
            self._checkpoints.remove(lease.id)
