"""A minority cut off by dropped packets: the majority serves, the minority never serves a stale read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chaos.cluster import LocalCluster
from chaos.netfault import Partitioner
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc
from tests.procs import free_port


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    ports = [(free_port(), free_port()) for _ in range(3)]
    c = LocalCluster(tmp_path / "cluster", size=3, ports=ports, distinct_hosts=True)
    c.start(timeout=60)
    yield c
    c.stop()


@pytest.fixture
def partitioner(cluster: LocalCluster) -> Iterator[Partitioner]:
    p = Partitioner([m.peer_port for m in cluster.members])
    yield p
    p.heal()


def call(endpoint: str, method: str, request: object, timeout: float = 15.0) -> object:
    """One KV call; calls that must fail pass a short timeout, calls that must succeed keep a generous one."""
    with grpc.insecure_channel(endpoint) as ch:
        return getattr(rpc_pb2_grpc.KVStub(ch), method)(request, timeout=timeout)


def leader_of(cluster: LocalCluster) -> tuple[str, list[str]]:
    lead = cluster.wait_ready()
    names = {}
    for m in cluster.members:
        with grpc.insecure_channel(m.endpoint) as ch:
            names[rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=3).header.member_id] = m.name
    leader = names[lead]
    return leader, [m.name for m in cluster.members if m.name != leader]


def test_isolated_leader_never_serves_stale_reads(cluster: LocalCluster, partitioner: Partitioner) -> None:
    old, others = leader_of(cluster)
    old_ep = cluster.member(old).endpoint
    call(old_ep, "Put", pb.PutRequest(key=b"x", value=b"before"))
    partitioner.partition([[cluster.member(old).host], [cluster.member(n).host for n in others]])

    # the majority elects a leader and takes writes
    majority_ep = cluster.member(others[0]).endpoint
    deadline = time.monotonic() + 60
    while True:
        try:
            call(majority_ep, "Put", pb.PutRequest(key=b"x", value=b"after"), timeout=2)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the majority did not serve writes"
            time.sleep(0.2)
    got = call(cluster.member(others[1]).endpoint, "Range", pb.RangeRequest(key=b"x"))
    assert got.kvs[0].value == b"after"

    # the isolated old leader: linearizable reads and writes fail, never return the stale value; it
    # steps down once it notices it lost the quorum (CheckQuorum), which a busy machine may delay
    no_leader = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
    outcomes = set()
    tries = 0
    deadline = time.monotonic() + 60
    while tries < 6 or no_leader not in outcomes:
        assert time.monotonic() < deadline, f"the isolated old leader never said it has no leader: {outcomes}"
        tries += 1
        try:
            got = call(old_ep, "Range", pb.RangeRequest(key=b"x"), timeout=2)
            raise AssertionError(f"stale linearizable read served: {got.kvs[0].value!r}")
        except grpc.RpcError as err:
            outcomes.add((err.code(), err.details()))
        with pytest.raises(grpc.RpcError):
            call(old_ep, "Put", pb.PutRequest(key=b"y", value=b"lost"), timeout=1)
    assert outcomes <= {
        no_leader,
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
    }, outcomes
    # a serializable read is allowed to be stale, and is
    stale = call(old_ep, "Range", pb.RangeRequest(key=b"x", serializable=True))
    assert stale.kvs[0].value == b"before"

    # healed: the old leader catches up and reads the new value
    partitioner.heal()
    deadline = time.monotonic() + 60
    while True:
        try:
            got = call(old_ep, "Range", pb.RangeRequest(key=b"x"), timeout=2)
            if got.kvs[0].value == b"after":
                break
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, "the old leader did not catch up after healing"
        time.sleep(0.2)
    assert call(old_ep, "Range", pb.RangeRequest(key=b"y")).count == 0  # the minority's write never happened
