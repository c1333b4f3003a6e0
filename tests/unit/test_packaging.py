"""The generated protobuf code is current, and the package list in pyproject.toml is complete."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from proto.generate import REPO_ROOT, generate, generated_files


def test_generated_code_is_current(tmp_path: Path) -> None:
    generate(tmp_path)
    stale = [f for f in generated_files() if (tmp_path / f).read_bytes() != (REPO_ROOT / f).read_bytes()]
    assert not stale, f"regenerate with `python -m proto.generate`: {stale}"


def test_every_package_is_listed() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    tracked = subprocess.run(
        ["git", "ls-files", "*__init__.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = set()
    for init in tracked:  # what a clean checkout (CI) has, not work in progress
        rel = Path(init).parent
        if rel.parts[0] != "tests":
            found.add(".".join(rel.parts))
    assert found - listed == set(), "add these packages to pyproject.toml"
    assert not (REPO_ROOT / "cmd" / "__init__.py").exists(), "cmd/ must not be a package (it would shadow stdlib cmd)"


def test_stdlib_cmd_is_not_shadowed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import cmd; print(cmd.__file__)"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert "site-packages" not in out.stdout and str(REPO_ROOT / "cmd") not in out.stdout
