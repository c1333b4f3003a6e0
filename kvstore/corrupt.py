"""Corruption checks across members with HashKV (etcd's ``corrupt.go``).

- ``initial_check`` (``--experimental-initial-corrupt-check``): before a member serves clients it
  compares its HashKV with every peer's at its own revision; a peer that has the same compaction
  revision but a different hash means the data differs, and the member refuses to start
  ("found data inconsistency with peers"). Peers that are behind, ahead past a compaction, or
  unreachable are only logged.
- ``check_once`` (``--experimental-corrupt-check-time``, run every that long by the leader): the
  leader hashes, asks every peer for its hash at that revision, confirms its own hash after a
  read barrier, and raises the CORRUPT alarm through the log (member id 0, as etcd 3.4.23 does:
  which member is wrong is not known) when its own hash changed at the same revision, a peer is
  ahead of it (revision or compaction revision), or a peer with the same compaction revision
  has a different hash.

Hashes of peers are asked over the peer transport (``raft.transport.request``), as etcd asks its
peers' ``/members/hashkv``. Everything the checks need from the member is the ``CorruptHost``
protocol, so tests drive them with fakes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from kvstore.errors import ANSWERABLE, Compacted, EtcdError, FutureRev, StartupError, as_etcd

log = logging.getLogger("raftkv.corrupt")


@dataclass(frozen=True, slots=True)
class HashKV:
    hash: int
    revision: int  # the member's current revision (etcd's header revision)
    compact_revision: int


@dataclass(frozen=True, slots=True)
class PeerHash:
    id: int
    resp: HashKV | None
    error: str = ""
    etcd_error: EtcdError | None = None


class CorruptHost(Protocol):
    member_id: int

    def is_leader(self) -> bool: ...

    def peer_ids(self) -> list[int]: ...

    async def local_hash_kv(self, revision: int) -> tuple[int, int, int]:
        """(hash at revision, current revision, compaction revision) of this member; revision 0: current."""
        ...

    async def peer_hash_kv(self, peer: int, revision: int) -> tuple[int, int, int]:
        """The same from a peer; raises EtcdError (Compacted, FutureRev) or OSError (unreachable)."""
        ...

    async def read_barrier(self) -> None: ...

    async def raise_corrupt(self) -> None:
        """Proposes the CORRUPT alarm (member id 0) through the log."""
        ...


async def peer_hashes(host: CorruptHost, revision: int) -> list[PeerHash]:
    async def one(peer: int) -> PeerHash:
        try:
            return PeerHash(peer, HashKV(*await host.peer_hash_kv(peer, revision)))
        except EtcdError as exc:
            log.warning("failed hash kv request", extra={"remote_peer_id": f"{peer:x}", "error": exc.message})
            return PeerHash(peer, None, exc.message, exc)
        except OSError as exc:
            log.warning("failed hash kv request", extra={"remote_peer_id": f"{peer:x}", "error": str(exc)})
            return PeerHash(peer, None, str(exc))

    return list(await asyncio.gather(*(one(p) for p in host.peer_ids())))


async def initial_check(host: CorruptHost) -> None:
    """Raises StartupError when a peer with the same compaction revision has another hash."""
    me = f"{host.member_id:x}"
    log.info("starting initial corruption check", extra={"local_member_id": me})
    h, rev, crev = await host.local_hash_kv(0)
    mismatch = 0
    for p in await peer_hashes(host, rev):
        if p.resp is not None:
            fields = {
                "local_member_id": me,
                "local_member_revision": rev,
                "local_member_compact_revision": crev,
                "local_member_hash": h,
                "remote_peer_id": f"{p.id:x}",
                "remote_peer_revision": p.resp.revision,
                "remote_peer_compact_revision": p.resp.compact_revision,
                "remote_peer_hash": p.resp.hash,
            }
            if p.resp.hash != h:
                if p.resp.compact_revision == crev:
                    log.warning("found different hash values from remote peer", extra=fields)
                    mismatch += 1
                else:
                    log.warning("found different compact revision values from remote peer", extra=fields)
        elif isinstance(p.etcd_error, FutureRev):
            log.warning("cannot fetch hash from slow remote peer", extra={"remote_peer_id": f"{p.id:x}"})
        elif isinstance(p.etcd_error, Compacted):
            log.warning(
                "cannot fetch hash from remote peer; local member is behind", extra={"remote_peer_id": f"{p.id:x}"}
            )
    if mismatch:
        raise StartupError(f"{me} found data inconsistency with peers")
    log.info("initial corruption checking passed; no corruption", extra={"local_member_id": me})


async def check_once(host: CorruptHost) -> list[str]:
    """The leader's periodic check; raises CORRUPT on a mismatch and returns what it found."""
    h, rev, crev = await host.local_hash_kv(0)
    peers = await peer_hashes(host, rev)
    await host.read_barrier()
    h2, rev2, crev2 = await host.local_hash_kv(0)
    found: list[str] = []
    if h2 != h and rev2 == rev and crev == crev2:
        found.append(f"hash of this member changed at revision {rev}: {h} then {h2}")
    checked = 0
    for p in peers:
        if p.resp is None:
            continue
        checked += 1
        pid = f"{p.id:x}"
        if p.resp.revision > rev2:
            found.append(f"revision {p.resp.revision} of follower {pid} is past the leader's {rev2}")
        if p.resp.compact_revision > crev2:
            found.append(f"compact revision {p.resp.compact_revision} of follower {pid} is past the leader's {crev2}")
        if p.resp.compact_revision == crev and p.resp.hash != h:
            found.append(f"hash {p.resp.hash} at revision {rev} of follower {pid}, the leader's is {h}")
    for what in found:
        log.warning("found hash mismatch", extra={"mismatch": what})
    if found:
        await host.raise_corrupt()
    log.info("finished peer corruption check", extra={"number_of_peers_checked": checked})
    return found


class PeriodicCheck:
    """Runs check_once every interval seconds while this member leads (etcd's monitorKVHash)."""

    def __init__(self, host: CorruptHost, interval: float) -> None:
        self.host = host
        self.interval = interval

    async def run(self) -> None:
        log.info("enabled corruption checking", extra={"interval_s": self.interval})
        while True:
            await asyncio.sleep(self.interval)
            if not self.host.is_leader():
                continue
            try:
                await check_once(self.host)
            except ANSWERABLE as exc:
                log.warning("failed to check hash KV", extra={"error": as_etcd(exc).message})
