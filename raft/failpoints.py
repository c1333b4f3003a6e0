"""Named failure points in the write path, armed by an environment variable (like etcd's gofail).

``RAFTKV_FAILPOINTS`` holds ``name=action`` pairs separated by ``;``. Actions:

- ``crash``: the process dies at once with ``os._exit(137)``, as if SIGKILLed there;
- ``sleep(MS)``: the calling thread sleeps MS milliseconds;
- ``error``: raises ``FailpointError`` (an I/O failure as far as the caller can tell);
- ``N*action``: the action happens on the N-th hit only (``3*crash``).

Points: ``beforeWALSave``, ``afterWALSave``, ``beforeApply``, ``afterApply``,
``beforeSendMessages``, ``beforeSnapshotInstall`` (a follower, after recording a snapshot from the
leader in its WAL, before replacing its state with it). When the variable is unset, ``hit`` is a single
dictionary lookup.
"""

from __future__ import annotations

import os
import re
import sys
import time

ENV_VAR = "RAFTKV_FAILPOINTS"
_ACTION = re.compile(r"^(?:(\d+)\*)?(crash|error|sleep\((\d+)\))$")


class FailpointError(OSError):
    pass


class _Point:
    __slots__ = ("action", "arg", "hits", "nth")

    def __init__(self, action: str, arg: int, nth: int) -> None:
        self.action = action
        self.arg = arg
        self.nth = nth
        self.hits = 0


def parse(spec: str) -> dict[str, _Point]:
    points: dict[str, _Point] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, sep, action = part.partition("=")
        m = _ACTION.match(action.strip())
        if not sep or not m:
            raise ValueError(f"{ENV_VAR}: cannot parse {part!r} (want name=crash|error|sleep(MS), optionally N*)")
        kind = m.group(2).split("(")[0]
        points[name.strip()] = _Point(kind, int(m.group(3) or 0), int(m.group(1) or 0))
    return points


_points: dict[str, _Point] = parse(os.environ.get(ENV_VAR, ""))


def arm(spec: str) -> None:
    """Replaces the armed points (tests and in-process harnesses)."""
    global _points
    _points = parse(spec)


def hit(name: str) -> None:
    point = _points.get(name)
    if point is None:
        return
    point.hits += 1
    if point.nth and point.hits != point.nth:
        return
    if point.action == "crash":
        sys.stderr.write(f"failpoint {name}: crash\n")
        sys.stderr.flush()
        os._exit(137)
    elif point.action == "sleep":
        time.sleep(point.arg / 1000)
    elif point.action == "error":
        raise FailpointError(f"failpoint {name}: injected I/O error")
