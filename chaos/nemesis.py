"""Nemeses: the faults a run injects, one at a time, on a schedule, and how each is healed.

``--nemesis kill,partition`` takes the named kinds in turn, in a shuffled order (each round of
faults has each kind once); a kind's mode is picked at random unless ``kind:mode`` fixes it.

- ``kill`` (leader, one, majority, all, all-leader-last): SIGKILL; healed by restarting, in random
  order, a moment apart; ``all-leader-last`` restarts the others first and the old leader once
  they have elected a leader among themselves (a slow machine rebooting last).
- ``pause`` (leader, one, majority): SIGSTOP; healed by SIGCONT.
- ``partition`` (leader, majority, bridge, halves): nftables drops peer traffic between members;
  healed by removing the rules.
- ``failpoint`` (beforeWALSave, afterWALSave, beforeApply, afterApply): restarts a member with
  ``RAFTKV_FAILPOINTS`` armed to crash on the N-th hit; healed by restarting it without.
- ``member`` (replace, wipe): membership changes under load. ``replace`` removes a running member
  from the cluster (MemberRemove; it stops itself); ``wipe`` kills one, deletes its data directory
  (a lost disk) and removes it. Either way the cluster runs with one member fewer until the heal
  adds a fresh member in its place (MemberAdd, a new id) that joins with an empty data directory
  and catches up from the leader (raftkv clusters the harness started).

``partition:leader`` isolates the leader; ``majority`` cuts a random minority from the rest;
``bridge`` cuts two members from each other while a third still talks to both; ``halves`` splits
the members into two random groups.

Every fault is recorded in the history under the process "nemesis" (``start`` and ``stop``
events with an id and a description), so reports can shade the windows. ``heal_all`` undoes
whatever is still in effect and is safe to call any number of times.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chaos.history import NEMESIS, Recorder
from chaos.netfault import NetFaultError
from chaos.targets import FAILPOINTS_VAR, Target, TargetError, status

MODES: dict[str, tuple[str, ...]] = {
    "kill": ("leader", "one", "majority", "all", "all-leader-last"),
    "pause": ("leader", "one", "majority"),
    "partition": ("leader", "majority", "bridge", "halves"),
    "failpoint": ("beforeWALSave", "afterWALSave", "beforeApply", "afterApply"),
    "member": ("replace", "wipe"),
}
NEEDS = {"kill": "kill", "pause": "pause", "partition": "partition", "failpoint": "failpoint", "member": "member"}


class NemesisError(ValueError):
    pass


def parse(spec: str) -> list[tuple[str, str | None]]:
    """ "kill,partition:bridge" -> [("kill", None), ("partition", "bridge")]; "none" -> []."""
    out: list[tuple[str, str | None]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "none":
            continue
        kind, _, mode = part.partition(":")
        if kind not in MODES:
            raise NemesisError(f"unknown nemesis {kind!r} (known: {', '.join(MODES)}, none)")
        if mode and mode not in MODES[kind]:
            raise NemesisError(f"nemesis {kind}: unknown mode {mode!r} (known: {', '.join(MODES[kind])})")
        out.append((kind, mode or None))
    return out


@dataclass
class Fault:
    id: int
    kind: str
    mode: str
    desc: str
    heal: Callable[[], str]  # returns a note on how healing went
    started: float = field(default_factory=time.monotonic)


class Nemesis:
    """Injects faults from ``kinds`` on a schedule in a thread of its own, until stopped."""

    def __init__(
        self,
        target: Target,
        kinds: list[tuple[str, str | None]],
        recorder: Recorder,
        seed: int = 0,
        interval: float = 5.0,
        duration: float = 5.0,
    ) -> None:
        for kind, _ in kinds:
            if NEEDS[kind] not in target.capabilities:
                raise NemesisError(f"nemesis {kind} is not possible against a {target.kind} target")
        self.target = target
        self.kinds = kinds
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.interval = interval
        self.duration = duration
        self.active: dict[int, Fault] = {}
        self.log: list[dict[str, object]] = []
        self._ids = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- schedule ----

    def start(self) -> None:
        if not self.kinds:
            return
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def _run(self) -> None:
        bag: list[tuple[str, str | None]] = []
        while not self._stop.wait(self.rng.uniform(0.5, 1.5) * self.interval):
            if not bag:  # every kind in turn, in a shuffled order: short runs exercise them all
                bag = list(self.kinds)
                self.rng.shuffle(bag)
            kind, mode = bag.pop()
            try:
                fault = self.inject(kind, mode)
            except (TargetError, NetFaultError, RuntimeError, TimeoutError, OSError) as exc:
                self._note("error", {"kind": kind, "error": str(exc)})
                continue
            self._stop.wait(self.rng.uniform(0.6, 1.4) * self.duration)
            self.heal(fault)

    def current(self) -> list[str]:
        with self._lock:
            return [f.desc for f in self.active.values()]

    # ---- faults ----

    def _note(self, f: str, value: dict[str, object]) -> None:
        ev = self.recorder.invoke(NEMESIS, f, value)
        self.log.append({"time_s": round(ev.time / 1e9, 3), "f": f, **value})

    def _members(self, how: str) -> list[str]:
        names = list(self.target.names)
        if how == "leader":
            leader = self.target.leader()
            return [leader] if leader else [self.rng.choice(names)]
        if how == "one":
            return [self.rng.choice(names)]
        if how == "majority":
            return self.rng.sample(names, len(names) // 2 + 1)
        if how == "minority":
            return self.rng.sample(names, len(names) // 2)
        return names

    def inject(self, kind: str, mode: str | None = None) -> Fault:
        mode = mode or self.rng.choice(MODES[kind])
        desc, heal = getattr(self, f"_{kind}")(mode)
        return self.record(kind, mode, desc, heal)

    def record(self, kind: str, mode: str, desc: str, heal: Callable[[], str]) -> Fault:
        """Records a fault a script has just injected itself (``chaos.scenarios``); heal it with ``heal``."""
        with self._lock:
            self._ids += 1
            fault = Fault(self._ids, kind, mode, desc, heal)
            self.active[fault.id] = fault
        self._note("start", {"id": fault.id, "kind": kind, "mode": mode, "desc": desc})
        return fault

    def heal(self, fault: Fault) -> None:
        try:
            note = fault.heal()
        except (TargetError, NetFaultError, RuntimeError, TimeoutError, OSError) as exc:
            note = f"heal failed: {exc}"
        with self._lock:
            self.active.pop(fault.id, None)
        self._note("stop", {"id": fault.id, "kind": fault.kind, "desc": fault.desc, "note": note})

    def heal_all(self) -> list[str]:
        """Heals every fault still in effect, then makes sure everything runs, unpaused and connected."""
        notes = []
        for fault in list(self.active.values()):
            self.heal(fault)
        for name in self.target.names:
            with contextlib.suppress(TargetError, OSError):
                if "pause" in self.target.capabilities:
                    self.target.resume(name)
        if "partition" in self.target.capabilities:
            with contextlib.suppress(NetFaultError):
                self.target.partitioner().heal()
        down = [n for n in self.target.names if not self.target.running(n)]
        if down and "kill" in self.target.capabilities:
            notes.append(self._restart(down))
        return notes

    def _restart(self, names: list[str], env: dict[str, str] | None = None) -> str:
        """Restarts members in random order, a moment apart; returns what went wrong, if anything.

        The moments are short (under 0.3 s, less than a member takes to start): who campaigns
        first is then up to the members' election timers, not to the order of restarts.
        """
        order = list(names)
        self.rng.shuffle(order)
        problems = []
        for i, name in enumerate(order):
            if i:
                time.sleep(self.rng.uniform(0.0, 0.3))
            try:
                self.target.restart(name, env=env, wait=False)
            except (TargetError, RuntimeError, OSError) as exc:
                problems.append(f"{name}: {exc}")
        for name in order:
            try:
                self._wait_up(name)
            except (TargetError, RuntimeError, TimeoutError) as exc:
                problems.append(f"{name}: {exc}")
        return "; ".join(problems) or "restarted " + ",".join(order)

    def _wait_up(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while status(self.target.endpoint(name), timeout=0.5) is None:
            if not self.target.running(name):
                raise TargetError("exited after restart" + _log_tail(self.target, name))
            if time.monotonic() > deadline:
                raise TimeoutError(f"did not answer within {timeout:.0f}s of its restart")
            time.sleep(0.1)

    def _kill(self, mode: str) -> tuple[str, Callable[[], str]]:
        last = None
        if mode == "all-leader-last":
            last = self._members("leader")[0]
            victims = [n for n in self.target.names if n != last] + [last]
        else:
            victims = self._members(mode)
        for name in victims:
            self.target.kill(name)

        def heal() -> str:
            if last is None:
                return self._restart(victims)
            note = self._restart(victims[:-1])
            deadline = time.monotonic() + 10
            while self.target.leader() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            return note + "; then " + self._restart([last])

        return f"kill {mode}: {','.join(victims)}", heal

    def _pause(self, mode: str) -> tuple[str, Callable[[], str]]:
        victims = self._members(mode)
        for name in victims:
            self.target.pause(name)

        def heal() -> str:
            for name in victims:
                self.target.resume(name)
            return "resumed"

        return f"pause {mode}: {','.join(victims)}", heal

    def _partition(self, mode: str) -> tuple[str, Callable[[], str]]:
        names = list(self.target.names)
        part = self.target.partitioner()
        host = self.target.host
        if mode == "bridge":
            self.rng.shuffle(names)
            middle, rest = names[0], names[1:]
            half = len(rest) // 2
            left, right = rest[:half], rest[half:]
            part.cut([(host(a), host(b)) for a in left for b in right])
            desc = f"partition bridge: {','.join(left)} | {','.join(right)} (via {middle})"
        else:
            if mode == "leader":
                side = self._members("leader")
            elif mode == "majority":
                side = self._members("minority")
            else:
                self.rng.shuffle(names)
                side = names[: self.rng.randint(1, len(names) - 1)]
            other = [n for n in names if n not in side]
            part.partition([[host(n) for n in side], [host(n) for n in other]])
            desc = f"partition {mode}: {','.join(sorted(side))} | {','.join(sorted(other))}"

        def heal() -> str:
            part.heal()
            return "healed"

        return desc, heal

    def _member(self, mode: str) -> tuple[str, Callable[[], str]]:
        victim = self.rng.choice(list(self.target.names))
        target = self.target
        if mode == "wipe":
            target.kill(victim)  # its disk is lost: the operator removes it (a member that is down)
        target.remove_member(victim)  # type: ignore[attr-defined]
        target.wipe(victim)  # type: ignore[attr-defined]  (a removed member's data can never serve again)

        def heal() -> str:
            target.add_member(victim, wait=False)  # type: ignore[attr-defined]
            self._wait_up(victim, timeout=60)
            return f"{victim} added again afresh"

        return f"member {mode}: {victim} removed", heal

    def _failpoint(self, point: str) -> tuple[str, Callable[[], str]]:
        victim = self._members(self.rng.choice(["leader", "one"]))[0]
        nth = self.rng.randint(3, 60)
        spec = f"{point}={nth}*crash"
        self.target.restart(victim, env={FAILPOINTS_VAR: spec}, wait=False)

        def heal() -> str:
            crashed = not self.target.running(victim)
            note = self._restart([victim], env={})
            return ("it crashed there; " if crashed else "not reached; ") + note

        return f"failpoint {spec} on {victim}", heal


def _log_tail(target: Target, name: str, lines: int = 3) -> str:
    path = target.log_path(name)
    if path is None or not path.exists():
        return ""
    tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return " (log: " + " / ".join(t[:200] for t in tail) + ")"
