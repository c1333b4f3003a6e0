"""Workloads by name, imported only when asked for."""

from __future__ import annotations

import importlib

from chaos.history import Recorder
from chaos.workloads.base import Options, Workload

WORKLOADS = {
    "register": "chaos.workloads.register:Register",
    "append": "chaos.workloads.append:Append",
    "watch": "chaos.workloads.watch:Watch",
    "lock": "chaos.workloads.lock:Lock",
}


def make(name: str, options: Options, recorder: Recorder) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    module, _, cls = WORKLOADS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(options, recorder)
