"""Start-up: the WAL opened (or created) and reconciled with what the state machine already applied.

``recover`` reads the WAL and the state machine's applied index and builds the ``MemoryStorage``
the Raft core starts from. What it refuses (``StartupError``, naming the directory): a WAL of
another member or cluster; a backend with applied entries and no WAL; a backend behind the WAL's
snapshot mark with the entries in between gone; a backend ahead of the WAL's last entry (the WAL
lost entries) unless the last mark is a snapshot received from the leader, whose backend copy may
be ahead of its index. A received snapshot the WAL marked but a crash kept from being installed is
installed now (``finish_snapshot_install``). Entries the backend applied were committed, even
when a commit-only hard state was not synced, so the hard state's commit is raised to them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from raft.api import StateMachine
from raft.core import (
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Snapshot,
    SnapshotMetadata,
)
from raft.disk import Disk
from raft.errors import StartupError
from raft.snapshot import SnapshotDir
from raft.wal import WAL

log = logging.getLogger("raftkv.raft")

MAX_UNCOMMITTED_BYTES = 256 << 20  # a leader that cannot commit refuses proposals past this


def _entry(term: int, index: int, etype: int, data: bytes) -> Entry:
    return Entry(term, index, EntryType(etype), data)


@dataclass
class Recovered:
    wal: WAL
    storage: MemoryStorage
    applied: int  # the index the core starts applying after
    snap_index: int  # the WAL's last snapshot mark (0: none)
    fresh: bool  # no WAL existed: a new member


def recover(
    *,
    wal_dir: Path,
    disk: Disk,
    snapshots: SnapshotDir,
    sm: StateMachine,
    member_id: int,
    cluster_id: int,
) -> Recovered:
    applied = sm.applied_index
    storage = MemoryStorage()
    snap_index = 0
    fresh = not WAL.exists(wal_dir, disk)
    if fresh:
        if applied:
            raise StartupError(f"the backend has applied entries but there is no WAL in {wal_dir}")
        return Recovered(WAL.create(wal_dir, member_id, cluster_id, disk), storage, 0, 0, True)
    wal, st = WAL.open(wal_dir, _entry, disk)
    if (st.member_id, st.cluster_id) != (member_id, cluster_id):
        wal.close()
        raise StartupError(
            f"WAL in {wal_dir} belongs to member {st.member_id:x} of cluster {st.cluster_id:x}, "
            f"not {member_id:x} of {cluster_id:x} (check --name, --initial-cluster and "
            "--initial-cluster-token)"
        )
    if st.snapshot_index:
        if applied < st.snapshot_index:
            applied = finish_snapshot_install(sm, snapshots, st.snapshot_index, st.snapshot_term)
        if applied < st.snapshot_index:
            wal.close()
            raise StartupError(
                f"the backend has applied only up to {applied} but the WAL in {wal_dir} starts after "
                f"its snapshot at {st.snapshot_index}: entries in between are lost; refusing to start"
            )
        cs = ConfState(st.snapshot_voters, st.snapshot_learners)
        storage.apply_snapshot(Snapshot(SnapshotMetadata(st.snapshot_index, st.snapshot_term, cs)))
        snap_index = st.snapshot_index
    storage.append(st.entries)
    last = storage.last_index()
    if applied > last and not st.snapshot_replaces_log:
        wal.close()
        raise StartupError(
            f"the backend has applied entry {applied} but the WAL in {wal_dir} ends at {last}: "
            "the WAL lost entries; refusing to start"
        )
    # A snapshot from the leader is a copy of its backend, which may be ahead of the snapshot's
    # index: the entries in between come again from the leader and the applier skips them.
    applied = min(applied, last)
    # entries the backend applied were committed, even if a commit-only hard state was not synced
    storage.set_hard_state(HardState(st.term, st.vote, max(st.commit, applied)))
    return Recovered(wal, storage, applied, snap_index, False)


def finish_snapshot_install(sm: StateMachine, snapshots: SnapshotDir, index: int, term: int) -> int:
    """Installs a received snapshot the WAL recorded but a crash kept from being installed."""
    path = snapshots.find_received(term, index)
    if path is not None:
        log.warning("finishing the install of a received snapshot", extra={"index": index, "file": str(path)})
        sm.install_snapshot(path)
    return sm.applied_index


def raft_config(member_id: int, election_ticks: int, applied: int, sm: StateMachine, rng: random.Random) -> Config:
    """The core's configuration: etcd's (PreVote, CheckQuorum, 1 MiB messages, 256 in flight)."""
    conf = sm.conf_state() if applied else None
    return Config(
        id=member_id,
        election_tick=election_ticks,
        heartbeat_tick=1,
        applied=applied,
        conf_state=ConfState(*conf) if conf is not None else None,
        check_quorum=True,
        pre_vote=True,
        rng=rng,
        max_size_per_msg=1 << 20,
        max_inflight_msgs=256,
        max_uncommitted_entries_size=MAX_UNCOMMITTED_BYTES,
    )
