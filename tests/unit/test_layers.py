"""The layering rules, checked on the sources: no import cycle inside kvstore/, the store and the
lessor free of etcd's error table and of the RPC layer, and the one table that maps every layer's
errors to etcd's codes and messages at the edge.

Imports are read with ``ast`` from every module's source, all of them: at the top, inside
functions and under ``if TYPE_CHECKING:`` (a cycle hidden in a function or behind a type-only
import is still a cycle of responsibilities). Importing ``a.b.c`` also imports the packages
``a`` and ``a.b``, so those count as edges too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import kvstore
from kvstore import errors
from kvstore.lease import errors as lease_errors
from kvstore.mvcc import errors as mvcc_errors
from kvstore.server.rpc import error_status
from raft import errors as log_errors

ROOT = pathlib.Path(kvstore.__file__).resolve().parent.parent


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module path.py imports, by absolute name (relative imports resolved), wherever the import is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module or ""
            target = (f"{base}.{module}" if module else base) if node.level else module
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of package it imports (with the parent packages importing a module runs)."""
    files = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for target in imports_of(path):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                # a package's own modules importing it (or a parent) is not an edge: it is being imported
                if dep in files and dep != name and not name.startswith(dep + "."):
                    edges.add(dep)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_and_a_type_only_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text("from . import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert cycles(import_graph("pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]
    finally:
        ROOT = saved


def test_no_import_cycle_inside_kvstore():
    graph = import_graph("kvstore")
    assert len(graph) > 50
    found = cycles(graph)
    assert not found, "import cycles inside kvstore/: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_watch_hub_and_its_streams_import_one_way():
    graph = import_graph("kvstore")
    assert "kvstore.watch.stream" in graph["kvstore.watch.hub"]
    for module in ("kvstore.watch.stream", "kvstore.watch.watcher", "kvstore.watch.history", "kvstore.watch.group"):
        assert "kvstore.watch.hub" not in graph[module], module
    assert "kvstore.watch.stream" not in graph["kvstore.watch.watcher"]


# the store and the lessor raise their own errors; etcd's table, gRPC and the server are above them
LOWER = ["kvstore/mvcc", "kvstore/lease/lessor.py", "kvstore/lease/apply.py", "kvstore/lease/expiry.py"]
ABOVE = {"kvstore.errors", "kvstore.server", "kvstore.apply", "grpc", "frontend"}


@pytest.mark.parametrize("where", LOWER)
def test_the_store_and_the_lessor_know_nothing_of_etcds_errors_or_the_rpc_layer(where):
    path = ROOT / where
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    assert files
    for f in files:
        bad = {m for m in imports_of(f) if m in ABOVE or m.split(".")[0] in ABOVE or m.rpartition(".")[0] in ABOVE}
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"


# ---- the one table ----


def layer_error_classes() -> list[type[Exception]]:
    """Every error class the log, the store and the lessor raise (not the bases, never raised themselves, nor
    those that never reach a client)."""
    never_answered = {lease_errors.NotPrimary, lease_errors.LeaseExpired, log_errors.StartupError}
    never_answered |= {mvcc_errors.MvccError, lease_errors.LeaseError}
    found = []
    for module in (log_errors, mvcc_errors, lease_errors):
        for value in vars(module).values():
            ours = isinstance(value, type) and issubclass(value, Exception) and value.__module__ == module.__name__
            if ours and value not in never_answered:
                found.append(value)
    return found


def test_every_layer_error_has_an_etcd_answer():
    classes = layer_error_classes()
    assert len(classes) >= 13
    for cls in classes:
        etcd = errors.to_etcd(cls())
        assert isinstance(etcd, errors.EtcdError), cls
        assert issubclass(cls, errors.ANSWERABLE), cls


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (mvcc_errors.CompactedError(), 11, "etcdserver: mvcc: required revision has been compacted"),
        (mvcc_errors.FutureRevError(), 11, "etcdserver: mvcc: required revision is a future revision"),
        (lease_errors.LeaseNotFoundError(), 5, "etcdserver: requested lease not found"),
        (lease_errors.LeaseExistsError(), 9, "etcdserver: lease already exists"),
        (lease_errors.LeaseTTLTooLargeError(), 11, "etcdserver: too large lease TTL"),
        (log_errors.NoLeaderError(), 14, "etcdserver: no leader"),
        (log_errors.BusyError(), 8, "etcdserver: too many requests"),
        (log_errors.NotLeaderError(), 9, "etcdserver: not leader"),
        (log_errors.BadTransfereeError(), 9, "etcdserver: bad leader transferee"),
        (log_errors.TransferTimeoutError(), 4, "etcdserver: request timed out, leader transfer took too long"),
        (log_errors.StoppedError(), 14, "etcdserver: server stopped"),
        (log_errors.RemovedError(), 14, "etcdserver: server stopped"),
        (log_errors.ConfChangePendingError(), 14, "etcdserver: server stopped"),
        (errors.EmptyKey(), 3, "etcdserver: key is not provided"),
    ],
)
def test_the_edge_answers_each_layers_error_as_etcd_does(exc, code, message):
    assert error_status(exc) == (code, message)


def test_the_edge_has_no_answer_for_an_unexpected_failure():
    assert error_status(RuntimeError("a bug")) is None
    assert error_status(lease_errors.NotPrimary()) is None
    assert errors.to_etcd(ValueError()) is None
    with pytest.raises(TypeError):
        errors.as_etcd(ValueError())
