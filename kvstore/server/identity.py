"""Who a starting member is: its member and cluster ids, its first peers, and how its log begins.

As etcd decides it at start:

- a data directory with a log: the ids recorded in the log (the flags that named the member at its
  first start no longer matter; the membership the log applied says who the peers are);
- none, with ``--initial-cluster-state new``: a founding member of a new cluster; ids derived from
  ``--initial-cluster`` and ``--initial-cluster-token`` (every founding member derives the same),
  and the log is bootstrapped with one membership entry per founding member;
- none, with ``--initial-cluster-state existing``: a member added with MemberAdd that joins; it asks
  the members listed in ``--initial-cluster`` for the cluster (over the peer transport, as etcd asks
  ``/members``), checks that ``--initial-cluster`` lists exactly its members (etcd's
  ``ValidateClusterAndAssignIDs``: matched by peer URLs) and takes its own id and the cluster id
  from the answer. Its log starts empty; the leader sends it the log or a snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from kvstore.config import ServerConfig, peer_address
from kvstore.errors import StartupError
from kvstore.membership import ChangeContext, MemberInfo
from kvstore.server.peer_requests import fetch_cluster
from raft.transport import ClientSSL, PeerRequestError
from raft.wal import WAL

log = logging.getLogger("raftkv.server")

FETCH_TIMEOUT = 10.0  # per peer, as etcd's GetClusterFromRemotePeers


@dataclass
class Identity:
    member_id: int
    cluster_id: int
    bootstrap: bool
    peers: dict[int, str]  # member id -> peer host:port
    known: dict[int, MemberInfo]
    contexts: dict[int, bytes] = field(default_factory=dict)  # the bootstrap entries' member records
    removed: set[int] = field(default_factory=set)


def wal_dir(cfg: ServerConfig) -> Path:
    return cfg.data_dir / "member" / "wal"


def _from_flags(cfg: ServerConfig) -> Identity:
    members = cfg.members
    return Identity(
        cfg.member_id,
        cfg.cluster_id,
        bootstrap=False,
        peers={mid: peer_address(urls[0]) for mid, (_, urls) in members.items()},
        known={mid: MemberInfo(mid, name, list(urls)) for mid, (name, urls) in members.items()},
    )


async def resolve(cfg: ServerConfig, has_members: bool, client_ssl: ClientSSL = None) -> Identity:
    """The identity to start with; has_members tells whether the backend already records the membership;
    client_ssl is what the member dials its peers with (peer TLS), for a joining member's questions."""
    ids = WAL.read_identity(wal_dir(cfg))
    if ids is not None:
        ident = _from_flags(cfg)
        ident.member_id, ident.cluster_id = ids
        if not has_members and cfg.initial_cluster_state == "existing":
            # a joining member that stopped before it applied anything: ask for the peers again
            try:
                joined = await _join(cfg, client_ssl)
                ident.peers, ident.known, ident.removed = joined.peers, joined.known, joined.removed
            except StartupError as exc:
                log.warning(
                    "cannot ask the cluster for its members; using --initial-cluster", extra={"error": str(exc)}
                )
        return ident
    if cfg.initial_cluster_state == "new":
        ident = _from_flags(cfg)
        ident.bootstrap = True
        ident.contexts = {
            mid: ChangeContext(0, name, tuple(urls)).encode() for mid, (name, urls) in cfg.members.items()
        }
        return ident
    return await _join(cfg, client_ssl)


async def _join(cfg: ServerConfig, client_ssl: ClientSSL) -> Identity:
    mine = sorted(cfg.initial_cluster[cfg.name])
    addresses = [url for name, urls in cfg.initial_cluster.items() if name != cfg.name for url in urls]
    try:
        cluster_id, members, removed = await fetch_cluster(addresses, FETCH_TIMEOUT, client_ssl)
    except PeerRequestError as exc:
        raise StartupError(
            f"cannot fetch cluster info from peer urls: could not retrieve cluster information from the given "
            f"URLs ({exc})"
        ) from None
    local = {name: sorted(urls) for name, urls in cfg.initial_cluster.items()}
    described = ", ".join(f"{m.id:x}={','.join(m.peer_urls)}" for m in members)
    if len(members) != len(local):
        raise StartupError(
            f"error validating peerURLs {{{described}}}: member count is unequal (--initial-cluster lists "
            f"{len(local)} members, the cluster has {len(members)})"
        )
    ids: dict[str, int] = {}
    for m in members:
        name = next((n for n, urls in local.items() if urls == sorted(m.peer_urls)), None)
        if name is None:
            raise StartupError(
                f"error validating peerURLs {{{described}}}: PeerURLs: no match found for existing member "
                f"({m.id:x}, {m.peer_urls})"
            )
        ids[name] = m.id
    member_id = ids[cfg.name]
    log.info(
        "joining an existing cluster",
        extra={"member_id": f"{member_id:x}", "cluster_id": f"{cluster_id:x}", "peer_urls": ",".join(mine)},
    )
    peers = {}
    for m in members:
        for url in m.peer_urls:
            try:
                peers[m.id] = peer_address(url)
                break
            except StartupError:
                continue
    return Identity(
        member_id,
        cluster_id,
        bootstrap=False,
        peers=peers,
        known={m.id: m for m in members},
        removed=removed,
    )
