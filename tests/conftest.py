"""Shared fixtures: real raftkv and etcd member processes for integration tests.

Also the suite-wide Hypothesis profile: the "ci" profile (the default) draws the same examples on
every run (``derandomize``), keeps no example database, and turns off the one health check that
measures time, so a run's result does not depend on luck or on how busy the machine is. Set
``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples (and a database) instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.procs import ETCD, ETCDCTL, EtcdMember, RaftkvMember, kill_leftovers, running

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _no_leftover_members() -> Iterator[None]:
    """A member a test started and did not stop (it failed half-way) is killed before the next test.
    Members of module- and session-scoped fixtures were started before this fixture's setup, and are
    left to those fixtures."""
    before = running()
    yield
    kill_leftovers(before)


@pytest.fixture
def raftkv(tmp_path: Path) -> Iterator[RaftkvMember]:
    member = RaftkvMember("m1", tmp_path / "m1.etcd").start()
    yield member
    member.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    if ETCD is None or ETCDCTL is None:
        pytest.fail("etcd-server and etcd-client must be installed (scripts/test installs them)")
    member = EtcdMember("ref", tmp_path / "ref.etcd").start()
    yield member
    member.stop()


@pytest.fixture(params=["raftkv", "etcd"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RaftkvMember | EtcdMember]:
    """The same test against raftkv and against the reference etcd (the oracle)."""
    if request.param == "etcd":
        if ETCD is None:
            pytest.fail("etcd-server must be installed (scripts/test installs it)")
        member: RaftkvMember | EtcdMember = EtcdMember("ref", tmp_path / "ref.etcd")
    else:
        member = RaftkvMember("m1", tmp_path / "m1.etcd")
    member.start()
    yield member
    member.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RaftkvMember | EtcdMember]]:
    """A raftkv member and a reference etcd member, shared by a module's side-by-side tests."""
    if ETCD is None:
        pytest.fail("etcd-server must be installed (scripts/test installs it)")
    base = tmp_path_factory.mktemp("pair")
    members: dict[str, RaftkvMember | EtcdMember] = {
        "raftkv": RaftkvMember("m1", base / "m1.etcd"),
        "etcd": EtcdMember("ref", base / "ref.etcd"),
    }
    try:
        for m in members.values():
            m.start()
        yield members
    finally:
        for m in members.values():
            m.stop()
