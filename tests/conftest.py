"""Shared fixtures: real raftkv and etcd member processes for integration tests; the integration mark.

Also the suite-wide Hypothesis profile: the "ci" profile (the default) draws the same examples on
every run (``derandomize``), keeps no example database, and turns off the one health check that
measures time, so a run's result does not depend on luck or on how busy the machine is. Set
``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples (and a database) instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from chaos import launch
from chaos.cluster import LocalCluster
from chaos.launch import MemberProcess
from tests.procs import ETCD, ETCDCTL, EtcdMember, Process, RaftkvMember, etcdctl, kill_leftovers, started

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _no_leftover_members() -> Iterator[None]:
    """A member a test started and did not stop (it failed half-way) is killed before the next test.
    Those running when the test began are left alone: they belong to module-scoped fixtures (pytest
    sets those up first), which stop them when the module is done."""
    before = started()
    yield
    kill_leftovers(keep=before)


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


# ---- the integration mark, given by what a test does ----
#
# A test that starts processes (members, etcd, etcdctl, tools, a helper interpreter) is marked
# ``integration`` here, so ``-m "not integration"`` runs only in-process tests. Detection reads the
# test's code: the names it uses, and those of the fixtures it requests and of the test-package
# helpers (functions, classes) they use in turn; a test reaching one of SPAWNERS is marked. Then a
# check at run time (an audit hook that sees every process the interpreter starts) fails a test
# that started a process without the mark, so the detection cannot silently miss one.

SPAWNERS: tuple[object, ...] = (
    subprocess,
    launch,
    MemberProcess,
    Process,
    RaftkvMember,
    EtcdMember,
    etcdctl,
    LocalCluster,
)
SPAWNING_ATTRIBUTES = {"create_subprocess_exec", "create_subprocess_shell", "Popen", "fork", "posix_spawn"}
PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec"}


def _code_objects(obj: object) -> Iterator[types.CodeType]:
    func = getattr(obj, "__func__", obj)
    func = getattr(func, "__wrapped__", func)
    if isinstance(func, types.FunctionType):
        stack = [func.__code__]
        while stack:
            code = stack.pop()
            yield code
            stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    elif isinstance(func, type):
        for value in vars(func).values():
            if isinstance(value, property):
                value = value.fget
            yield from _code_objects(value)


def _spawns(obj: object, seen: set[int]) -> bool:
    """Whether obj (a function or class) uses a spawner, directly or through test-package helpers."""
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    func = getattr(obj, "__func__", obj)
    func = getattr(func, "__wrapped__", func)
    namespace = getattr(func, "__globals__", None)
    if namespace is None and isinstance(func, type):
        namespace = vars(sys.modules.get(func.__module__, types))
    if namespace is None:
        return False
    for code in _code_objects(obj):
        if SPAWNING_ATTRIBUTES & set(code.co_names):
            return True
        for name in code.co_names:
            value = namespace.get(name)
            if value is None:
                continue
            if any(value is s for s in SPAWNERS):
                return True
            module = getattr(value, "__module__", "") or ""
            is_helper = isinstance(value, (types.FunctionType, type)) and module.split(".")[0] == "tests"
            if is_helper and _spawns(value, seen):
                return True
    return False


def _starts_processes(item: pytest.Item) -> bool:
    seen: set[int] = set()
    if isinstance(item, pytest.Function) and _spawns(item.obj, seen):
        return True
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for defs in info.name2fixturedefs.values():
        for fixturedef in defs:
            if fixturedef.func.__module__.split(".")[0] == "tests" and _spawns(fixturedef.func, seen):
                return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("integration") is None and _starts_processes(item):
            item.add_marker(pytest.mark.integration)


_processes_started = 0


def _count_processes(event: str, args: tuple[object, ...]) -> None:
    global _processes_started
    if event in PROCESS_EVENTS:
        _processes_started += 1


sys.addaudithook(_count_processes)


_started_before: dict[str, int] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _started_before[item.nodeid] = _processes_started
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield
    before = _started_before.pop(item.nodeid, _processes_started)
    if _processes_started != before and item.get_closest_marker("integration") is None:
        raise AssertionError(
            f"{item.nodeid} started a process but is not marked integration, and tests/conftest.py did not"
            " see it: mark it, or teach the detection (SPAWNERS) the spawner it uses"
        )
    return result
