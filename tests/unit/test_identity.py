"""Who a starting member is (kvstore.server.identity): a founding member, a restart (the log's ids),
or a member joining an existing cluster (ids from its peers, --initial-cluster checked as etcd does)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kvstore import config
from kvstore.errors import StartupError
from kvstore.membership import ChangeContext, MemberInfo
from kvstore.server import identity
from raft.transport import PeerRequestError
from raft.wal import WAL

CLUSTER = "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3"


def cfg(tmp_path: Path, name: str = "c", state: str = "new", cluster: str = CLUSTER) -> config.ServerConfig:
    args = argparse.Namespace(
        name=name,
        data_dir=str(tmp_path / name),
        initial_cluster=cluster,
        initial_cluster_state=state,
        initial_advertise_peer_urls=dict(p.split("=") for p in cluster.split(","))[name],
    )
    return config.from_args(args, environ={})


async def test_a_founding_member_bootstraps_with_every_members_record(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    ident = await identity.resolve(c, has_members=False)
    assert ident.bootstrap and (ident.member_id, ident.cluster_id) == (c.member_id, c.cluster_id)
    records = {mid: ChangeContext.decode(ctx) for mid, ctx in ident.contexts.items()}
    assert sorted((r.name, r.peer_urls) for r in records.values()) == [
        ("a", ("http://127.0.0.1:1",)),
        ("b", ("http://127.0.0.1:2",)),
        ("c", ("http://127.0.0.1:3",)),
    ]
    assert ident.peers[c.member_id] == "127.0.0.1:3"


async def test_a_restart_takes_the_ids_its_log_records(tmp_path: Path) -> None:
    c = cfg(tmp_path, state="existing")
    WAL.create(identity.wal_dir(c), 0xABC, 0xDEF).close()
    ident = await identity.resolve(c, has_members=True)
    assert (ident.member_id, ident.cluster_id, ident.bootstrap) == (0xABC, 0xDEF, False)


def existing(*members: MemberInfo) -> object:
    async def fetch(
        addresses: list[str], timeout: float, client_ssl: object = None
    ) -> tuple[int, list[MemberInfo], set[int]]:
        assert sorted(addresses) == ["http://127.0.0.1:1", "http://127.0.0.1:2"]  # the others, not itself
        return 0x5EED, list(members), {0x99}

    return fetch


async def test_a_joining_member_gets_its_id_and_the_clusters_from_its_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        identity,
        "fetch_cluster",
        existing(
            MemberInfo(11, "a", ["http://127.0.0.1:1"]),
            MemberInfo(22, "b", ["http://127.0.0.1:2"]),
            MemberInfo(33, "", ["http://127.0.0.1:3"]),  # added, not started yet: that is us
        ),
    )
    ident = await identity.resolve(cfg(tmp_path, state="existing"), has_members=False)
    assert (ident.member_id, ident.cluster_id, ident.bootstrap) == (33, 0x5EED, False)
    assert ident.peers == {11: "127.0.0.1:1", 22: "127.0.0.1:2", 33: "127.0.0.1:3"}
    assert ident.removed == {0x99} and ident.known[11].name == "a"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            [MemberInfo(11, "a", ["http://127.0.0.1:1"]), MemberInfo(22, "b", ["http://127.0.0.1:2"])],
            "count is unequal",
        ),
        (
            [
                MemberInfo(11, "a", ["http://127.0.0.1:1"]),
                MemberInfo(22, "b", ["http://127.0.0.1:2"]),
                MemberInfo(33, "", ["http://127.0.0.1:9"]),
            ],
            "no match found for existing member",
        ),
    ],
)
async def test_a_joining_member_whose_flags_do_not_describe_the_cluster_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: list[MemberInfo], message: str
) -> None:
    monkeypatch.setattr(identity, "fetch_cluster", existing(*members))
    with pytest.raises(StartupError, match=message):
        await identity.resolve(cfg(tmp_path, state="existing"), has_members=False)


async def test_a_joining_member_that_reaches_nobody_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(
        addresses: list[str], timeout: float, client_ssl: object = None
    ) -> tuple[int, list[MemberInfo], set[int]]:
        raise PeerRequestError("connection refused")

    monkeypatch.setattr(identity, "fetch_cluster", unreachable)
    with pytest.raises(StartupError, match="cannot fetch cluster info from peer urls"):
        await identity.resolve(cfg(tmp_path, state="existing"), has_members=False)
