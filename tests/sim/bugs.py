"""Known flaws to inject, to prove the simulator and its checkers find them.

Each is a context manager that breaks one thing for the length of a run and puts it back:

- ``stale-reads``: raftkv's own unsafe mode (``raft/unsafe.py``): linearizable reads skip the
  ReadIndex round and serve the member's local state.
- ``ack-before-fsync``: raftkv's own unsafe mode: followers acknowledge appends before their WAL
  has them, and persist them ``PERSIST_DELAY_S`` later.
- ``tombstone-dropped``: etcd-io/etcd#18089, fixed in ``kvstore/mvcc/key_index.py``: compacting at
  the revision of a deletion drops the tombstone with the rest of the key's ended generation, so
  a watcher starting at the compaction revision never sees that deletion.
- ``lost-catch-up``: a watch catch-up that stops half-way (the shape of etcd's lost-event bugs in
  its unsynced watchers, etcd-io/etcd#9281 and #17529): a watcher whose catch-up from the backend
  needs more than one batch is moved to the synced group after the first, at the head, and the
  revisions in between never reach it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kvstore.mvcc.key_index import KeyIndex, _kept_from
from kvstore.mvcc.revision import Revision
from kvstore.watch.hub import WatchHub
from kvstore.watch.watcher import SYNCED, UNSYNCED
from raft import unsafe

BUGS = ("stale-reads", "ack-before-fsync", "tombstone-dropped", "lost-catch-up")


def _compact_dropping_tombstones(self: KeyIndex, at_rev: int, available: set[Revision]) -> None:
    gens = self.generations
    first = 0
    # the bug: a generation whose tombstone is AT at_rev goes too (etcd before 3.4.34 / 3.5.15)
    while first < len(gens) - 1 and gens[first].revs[-1][0] <= at_rev:
        first += 1
    for g in gens[first:]:
        if not g.revs or g.revs[0][0] > at_rev:
            break
        g.revs = g.revs[_kept_from(g.revs, at_rev) :]
        available.update(r for r in g.revs if r[0] <= at_rev)
    self.generations = gens[first:]


def _sync_step_giving_up(self: WatchHub) -> bool:
    before = {w: w.min_rev for w in self.unsynced}
    did = _original_sync_step(self)
    cur = self.store.current_rev
    for w in list(self.unsynced):
        start = before.get(w)
        if start is not None and w.state == UNSYNCED and start < w.min_rev <= cur:
            # the bug: the catch-up moved the watcher forward but not to the head; call it done
            del self.unsynced[w]
            w.min_rev = cur + 1
            self._set_state(w, SYNCED)
    return did


_original_sync_step = WatchHub.sync_step


@contextlib.contextmanager
def injected(bug: str) -> Iterator[None]:
    if not bug:
        yield
        return
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r} (known: {', '.join(BUGS)})")
    saved = (unsafe.STALE_READS, unsafe.ACK_BEFORE_FSYNC, KeyIndex.compact, WatchHub.sync_step)
    try:
        if bug == "stale-reads":
            unsafe.STALE_READS = True
        elif bug == "ack-before-fsync":
            unsafe.ACK_BEFORE_FSYNC = True
        elif bug == "tombstone-dropped":
            KeyIndex.compact = _compact_dropping_tombstones  # type: ignore[method-assign]
        else:
            WatchHub.sync_step = _sync_step_giving_up  # type: ignore[method-assign]
        yield
    finally:
        unsafe.STALE_READS, unsafe.ACK_BEFORE_FSYNC = saved[0], saved[1]
        KeyIndex.compact = saved[2]  # type: ignore[method-assign]
        WatchHub.sync_step = saved[3]  # type: ignore[method-assign]
