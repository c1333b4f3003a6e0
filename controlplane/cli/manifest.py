"""Reading manifests: one or more YAML (or JSON) documents from a file, a directory or stdin.

Errors name the file, the document and, for invalid objects, the field path (see
controlplane.api.validation); nothing is written unless every document is valid.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.api import kinds
from controlplane.api.defaults import apply_defaults
from controlplane.api.validation import ValidationError, validate
from controlplane.cli.common import CliError


@dataclass
class Document:
    source: str  # "web.yaml (document 2)"
    obj: dict[str, Any]


def _files(path: str) -> list[tuple[str, str]]:
    if path == "-":
        return [("<stdin>", sys.stdin.read())]
    p = Path(path)
    if p.is_dir():
        return [(str(f), f.read_text()) for f in sorted(p.iterdir()) if f.suffix in (".yaml", ".yml", ".json")]
    if not p.exists():
        raise CliError(f'the path "{path}" does not exist')
    return [(path, p.read_text())]


def load(paths: list[str], namespace: str = "default") -> list[Document]:
    """Parses, defaults and validates every document; raises CliError naming what is wrong."""
    import yaml  # PyYAML: only the verbs that read manifests need it

    docs: list[Document] = []
    errors: list[str] = []
    for name, text in _files_all(paths):
        try:
            parsed = [d for d in yaml.safe_load_all(text)]
        except yaml.YAMLError as exc:
            raise CliError(f"error parsing {name}: {exc}") from None
        multi = sum(1 for d in parsed if d is not None) > 1
        for i, obj in enumerate(parsed, 1):
            if obj is None:
                continue
            source = f"{name} (document {i})" if multi else name
            if isinstance(obj, dict) and obj.get("kind") == "List" and isinstance(obj.get("items"), list):
                items = obj["items"]
            else:
                items = [obj]
            for item in items:
                try:
                    if isinstance(item, dict):
                        md = item.get("metadata")
                        kind = kinds.BY_KIND.get(item.get("kind", ""))
                        if isinstance(md, dict) and not md.get("namespace") and kind is not None and kind.namespaced:
                            md["namespace"] = namespace
                        apply_defaults(item)
                    validate(item)
                    docs.append(Document(source, item))
                except ValidationError as exc:
                    errors.append(f"{source}: {exc}")
    if errors:
        raise CliError("\n".join(errors))
    if not docs:
        raise CliError("no objects passed to apply")
    return docs


def _files_all(paths: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for p in paths:
        out += _files(p)
    return out
