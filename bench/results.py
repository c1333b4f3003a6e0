"""Where the benchmarks' results go: one JSON document per run, named by benchmark and UTC time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def utc_now() -> str:
    """The run's date, as the documents record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def members_tag(members: int) -> str:
    """The file-name part that tells a three-member run from a single member's ("" for one)."""
    return "" if members == 1 else f"{members}members-"


def write_results(results_dir: Path, prefix: str, doc: Any) -> Path:
    """Writes doc as results_dir/<prefix><UTC time>.json and returns the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{prefix}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
