"""raft.core must stay pure: no asyncio, clock, global randomness, sockets or threads. And raft/ as a whole
knows nothing of the store, etcd's errors, the RPC layer or the protos (it raises its own errors)."""

import ast
import pathlib
import subprocess
import sys

import raft.core

BANNED = {"asyncio", "time", "random", "socket", "threading"}
CORE_DIR = pathlib.Path(raft.core.__file__).parent


def _imported_modules(path: pathlib.Path) -> set[str]:
    """The top-level names of what path imports, wherever the import is (function bodies and
    ``if TYPE_CHECKING:`` too); a relative import counts as raft's own; ``__import__`` and
    ``importlib`` (a dynamic import) are reported as such."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module.split(".")[0] if node.module and node.level == 0 else "raft")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.add("__import__")
    return found


def test_core_sources_import_nothing_banned():
    files = sorted(CORE_DIR.glob("*.py"))
    assert len(files) >= 10
    for f in files:
        bad = _imported_modules(f) & (BANNED | {"__import__", "importlib"})
        assert not bad, f"{f.name} imports {bad}"


def test_importing_core_pulls_in_no_banned_module():
    # `time` is preloaded by the interpreter itself, so it cannot show up as "new"; the
    # AST scan above is the authoritative check for it.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import raft.core\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        f"print(sorted(new & set({sorted(BANNED)!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=CORE_DIR.parent.parent,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


LAYERS_ABOVE = {"kvstore", "proto", "grpc", "frontend", "chaos", "bench", "controlplane", "raftkv_cmd", "google"}


def test_raft_imports_nothing_of_the_store_or_the_rpc_layer():
    """raft/ knows nothing of kvstore/, proto/ or grpc: it raises its own errors (raft.errors)."""
    files = sorted(CORE_DIR.parent.rglob("*.py"))
    assert len(files) >= 25
    for f in files:
        found = _imported_modules(f)
        bad = found & (LAYERS_ABOVE | {"__import__", "importlib"})
        assert not bad, f"{f.relative_to(CORE_DIR.parent.parent)} imports {bad}"


def test_importing_all_of_raft_loads_nothing_of_the_layers_above():
    """The same at run time: every raft module imported, no module of a layer above (nor the protobuf
    runtime) is loaded, whatever an import does indirectly."""
    modules = sorted(
        ".".join(f.relative_to(CORE_DIR.parent.parent).with_suffix("").parts).removesuffix(".__init__")
        for f in CORE_DIR.parent.rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(sorted({{m for m in sys.modules if m.split('.')[0] in {sorted(LAYERS_ABOVE)!r}}}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=CORE_DIR.parent.parent
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
