"""One chaos run, start to finish: cluster up, workload under faults, heal, converge, check, report.

Phases, each bounded in time:

1. the target comes up (a local cluster the run starts, or the given endpoints);
2. workers run the workload for ``time_s`` while the nemesis injects faults and one line of
   progress is updated (elapsed, ops ok/fail/info, faults in effect);
3. the nemesis stops and every fault is healed; the run waits for the members to agree on a
   leader and on an applied index;
4. the workload's final reads, through every member;
5. the local cluster is stopped (after 2-4 whatever happens: ``finally``), the history is
   written, checked, and reported.

A scenario run (``cfg.scenario``, see ``chaos.scenarios``) replaces phase 2 with its script of
operations and faults; the other phases are the same.

The output folder gets ``history.jsonl``, ``verdict.json``, ``latency.png``, and on a violation
``timeline.html``; a local cluster's member logs stay there too. ``run`` returns the exit code:
0 valid, 1 invalid, 2 unknown or aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import grpc

from chaos import report, scenarios, security
from chaos.history import INFO, Recorder, nemesis_windows, pair, write_jsonl
from chaos.nemesis import Nemesis, parse
from chaos.targets import ExternalTarget, LocalTarget, Target
from chaos.workloads import registry
from chaos.workloads.base import Channels, Client, Options, Pacer

EXIT = {"valid": 0, "invalid": 1, "unknown": 2}
OUTPUTS = ("history.jsonl", "verdict.json", "latency.png", "timeline.html", "unfenced.html")


@dataclass
class RunConfig:
    workload: str = "register"
    nemesis: str = "none"
    time_s: float = 30.0
    concurrency: int = 10
    out: Path = Path("chaos-out")
    endpoints: list[str] | None = None
    pids: list[int] | None = None
    etcd: bool = False
    netns: bool | None = None
    rate: float = 200.0
    op_timeout: float = 5.0
    seed: int | None = None
    interval: float = 5.0
    fault_duration: float = 5.0
    check_budget: float = 120.0
    converge_timeout: float = 60.0
    keys: int = 0
    ops_per_key: int = 0
    member_args: list[str] = field(default_factory=list)
    member_env: dict[str, str] = field(default_factory=dict)
    progress: bool | None = None  # None: when stdout is a terminal
    workload_options: dict[str, Any] = field(default_factory=dict)
    scenario: str | None = None  # a constructed schedule (chaos.scenarios) instead of workers and a nemesis
    secure: bool = False  # client and peer TLS with client certificates, and auth on (chaos.security)
    min_ok: int = 0  # the workers go on past time_s until this many operations completed ok ...
    max_time_s: float = 0.0  # ... but for no longer than this in all (0: 4 x time_s)


class Progress:
    """One line, rewritten in place on a terminal; a line every 10 s elsewhere."""

    def __init__(self, stream: TextIO, live: bool, total_s: float) -> None:
        self.stream = stream
        self.live = live
        self.total = total_s
        self.last_print = 0.0
        self.width = 0

    def show(self, elapsed: float, counts: dict[str, int], faults: list[str], phase: str = "run") -> None:
        fault_text = "; ".join(faults) if faults else "no faults"
        clock = f"{elapsed:5.1f}/{self.total:.0f}s" if self.total else f"{elapsed:5.1f}s"
        line = f"[{phase} {clock}] ok {counts['ok']}  fail {counts['fail']}  info {counts['info']}  | {fault_text}"
        if self.live:
            pad = max(0, self.width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.width = len(line)
            self.stream.flush()
        elif time.monotonic() - self.last_print >= 10 or phase != "run":
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_print = time.monotonic()

    def done(self) -> None:
        if self.live and self.width:
            self.stream.write("\n")
            self.stream.flush()


def make_target(cfg: RunConfig) -> Target:
    if cfg.endpoints:
        if cfg.secure:
            raise ValueError("--secure sets up a local cluster's certificates and users; it cannot take --endpoints")
        return ExternalTarget(cfg.endpoints, cfg.pids, log_dir=cfg.out)
    kind = "etcd" if cfg.etcd else "raftkv"
    target = LocalTarget(
        cfg.out / "cluster", kind=kind, member_args=cfg.member_args, env=cfg.member_env, netns=cfg.netns
    )
    security.use(None)
    if cfg.secure:
        pki = security.Pki(cfg.out / "pki", [m.host for m in target.cluster.members])
        for m in target.cluster.members:
            m.args.extend(pki.member_flags())
            m.scheme = "https"
        security.use(pki.client)
        target.pki = pki
    return target


async def _workers(
    workload: Any, channels: Channels, recorder: Recorder, cfg: RunConfig, stop: asyncio.Event
) -> list[asyncio.Task]:
    pacer = Pacer(cfg.rate)

    async def loop(w: int) -> None:
        client = Client(w, cfg.concurrency, channels, recorder, cfg.op_timeout)
        while not stop.is_set():
            await pacer.wait()
            if stop.is_set():
                return
            await workload.operate(client)

    return [asyncio.create_task(loop(w), name=f"worker-{w}") for w in range(cfg.concurrency)]


async def _run_phases(
    cfg: RunConfig, target: Target, workload: Any, nemesis: Nemesis, recorder: Recorder, progress: Progress
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    notes: dict[str, Any] = {"aborted": False}
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: (notes.__setitem__("aborted", True), stop.set()))
    channels = Channels(target.endpoints)
    try:
        await workload.setup(channels)
        recorder.restart_clock()
        t0 = time.monotonic()
        if cfg.scenario:
            tasks: list[asyncio.Task] = []
            background = asyncio.create_task(asyncio.sleep(0))
            await _play(cfg.scenario, target, nemesis, channels, recorder, workload, cfg, progress, notes, t0)
        else:
            nemesis.start()
            background = asyncio.create_task(workload.background(channels, stop), name="background")
            tasks = await _workers(workload, channels, recorder, cfg, stop)
            longest = cfg.max_time_s or 4 * cfg.time_s
            while not stop.is_set():
                elapsed = time.monotonic() - t0
                progress.show(elapsed, recorder.count(), nemesis.current())
                if elapsed >= cfg.time_s and (recorder.count()["ok"] >= cfg.min_ok or elapsed >= longest):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        stop.set()
        progress.show(time.monotonic() - t0, recorder.count(), nemesis.current(), phase="heal")
        done, pending = await asyncio.wait(tasks, timeout=cfg.op_timeout + 5) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None and not isinstance(task.exception(), asyncio.CancelledError):
                notes.setdefault("worker_errors", []).append(repr(task.exception()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(background, return_exceptions=True), cfg.op_timeout + 5)
        if not background.done():
            background.cancel()
        with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError):
            await asyncio.wait_for(workload.teardown(channels), cfg.op_timeout + 5)
        await loop.run_in_executor(None, nemesis.stop)
        notes["heal"] = await loop.run_in_executor(None, nemesis.heal_all)
        notes["convergence"] = await loop.run_in_executor(None, target.wait_converged, cfg.converge_timeout)
        progress.show(time.monotonic() - t0, recorder.count(), [], phase="final reads")
        if not notes["aborted"]:
            await channels.close()  # fresh connections: no reconnect backoff left over from the faults
            channels = Channels(target.endpoints)
            try:
                await asyncio.wait_for(workload.final(channels), 120)
            except TimeoutError:
                notes["final"] = "final reads timed out"
            except grpc.aio.AioRpcError as exc:
                notes["final"] = f"final reads failed: {exc.code().name}: {exc.details()}"
        progress.done()
    finally:
        await channels.close()
    return notes


async def _play(
    name: str,
    target: Target,
    nemesis: Nemesis,
    channels: Channels,
    recorder: Recorder,
    workload: Any,
    cfg: RunConfig,
    progress: Progress,
    notes: dict[str, Any],
    t0: float,
) -> None:
    """Phase 2 of a scenario run: its script, step by step; a step that cannot happen aborts the run."""

    def say(text: str) -> None:
        progress.show(time.monotonic() - t0, recorder.count(), nemesis.current(), phase=text)

    stage = scenarios.Stage(target, nemesis, channels, recorder, workload, cfg.op_timeout, say)
    try:
        notes["scenario"] = await scenarios.get(name).play(stage)
    except (scenarios.ScenarioError, TimeoutError, grpc.aio.AioRpcError) as exc:
        notes["aborted"] = True
        notes["error"] = f"scenario {name}: {exc}"
    notes["steps"] = stage.notes["steps"]


def with_scenario(cfg: RunConfig) -> RunConfig:
    """cfg with what its scenario fixes (workload, member flags and environment); refuses what conflicts."""
    if not cfg.scenario:
        return cfg
    sc = scenarios.get(cfg.scenario)
    if cfg.workload != sc.workload:
        raise ValueError(f"scenario {sc.name} runs the {sc.workload} workload, not {cfg.workload}")
    if cfg.nemesis not in ("none", "scripted"):
        raise ValueError(f"scenario {sc.name} injects its own faults: no nemesis ({cfg.nemesis!r}) can be given")
    if cfg.endpoints or cfg.etcd:
        raise ValueError(f"scenario {sc.name} needs a local raftkv cluster it starts itself")
    return replace(
        cfg,
        nemesis="scripted",
        time_s=0.0,
        converge_timeout=min(cfg.converge_timeout, sc.converge_timeout),
        member_args=[*sc.member_args, *cfg.member_args],
        member_env={**sc.member_env, **cfg.member_env},
    )


def run(cfg: RunConfig, stream: TextIO = sys.stdout) -> tuple[int, dict[str, Any]]:
    """Runs, checks and reports; returns (exit code, verdict)."""
    cfg = with_scenario(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cfg.out / "cluster", ignore_errors=True)  # a previous run's cluster: never reused
    for name in OUTPUTS:
        (cfg.out / name).unlink(missing_ok=True)
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    started = time.time()
    recorder = Recorder()
    options = Options(
        concurrency=cfg.concurrency,
        rate=cfg.rate,
        op_timeout=cfg.op_timeout,
        seed=seed,
        run_id=f"{seed:x}-{os.getpid():x}",
        keys=cfg.keys,
        ops_per_key=cfg.ops_per_key,
        extra=dict(cfg.workload_options),
    )
    workload = registry.make(cfg.workload, options, recorder)
    kinds = [] if cfg.scenario else parse(cfg.nemesis)
    target = make_target(cfg)
    notes: dict[str, Any] = {}
    progress = Progress(stream, stream.isatty() if cfg.progress is None else cfg.progress, cfg.time_s)
    verdict: dict[str, Any] = {
        "workload": cfg.workload,
        "nemesis": cfg.nemesis,
        "scenario": cfg.scenario,
        "target": target.kind,
        "endpoints": target.endpoints,
        "seed": seed,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    nemesis: Nemesis | None = None
    try:
        plan = f"scenario {cfg.scenario}" if cfg.scenario else f"nemesis {cfg.nemesis}, {cfg.time_s:.0f}s"
        stream.write(
            f"chaos: {cfg.workload} with {plan} on {target.kind} "
            f"({', '.join(target.endpoints)}), seed {seed}, output in {cfg.out}\n"
        )
        stream.flush()
        target.start()
        pki = getattr(target, "pki", None)
        if pki is not None:
            verdict["security"] = security.enable_auth(target.endpoints[0], pki)
        nemesis = Nemesis(target, kinds, recorder, seed=seed, interval=cfg.interval, duration=cfg.fault_duration)
        notes = asyncio.run(_run_phases(cfg, target, workload, nemesis, recorder, progress))
    except KeyboardInterrupt:
        notes["aborted"] = True
    except Exception as exc:  # a harness failure: still write what we have, and say so
        notes["aborted"] = True
        notes["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if nemesis is not None:
            with contextlib.suppress(Exception):
                nemesis.stop()
                nemesis.heal_all()
        target.stop()
        security.use(None)
    events = recorder.events
    end_time = recorder.now()
    write_jsonl(events, cfg.out / "history.jsonl")
    ops = pair(events)
    faults = nemesis_windows(events, end_time)
    stream.write(f"chaos: checking {len(ops)} operations\n")
    stream.flush()
    t_check = time.monotonic()
    checked = workload.check(ops, cfg.check_budget)
    verdict_name = checked["verdict"]
    if notes.get("aborted") and verdict_name != "invalid":
        verdict_name = "unknown"
    converged = (notes.get("convergence") or {}).get("converged", False)
    counts = recorder.count()
    verdict.update(
        {
            "verdict": verdict_name,
            "valid": verdict_name == "valid",
            "aborted": bool(notes.get("aborted")),
            "ops": {**counts, "total": len(ops)},
            "elapsed_s": round(time.time() - started, 1),
            "check_s": round(time.monotonic() - t_check, 2),
            "checker": {k: v for k, v in checked.items() if k not in ("windows", "demo")},
            "faults": nemesis.log if nemesis is not None else [],
            "notes": notes,
            "converged": converged,
            "files": {"history": "history.jsonl", "plot": "latency.png"},
        }
    )
    title = f"{cfg.workload} / {cfg.scenario or cfg.nemesis} on {target.kind}: {verdict_name}"
    try:
        report.latency_plot(ops, faults, cfg.out / "latency.png", title, cfg.op_timeout)
    except Exception as exc:  # the verdict matters more than the picture
        verdict["files"]["plot"] = None
        verdict["notes"]["plot_error"] = f"{type(exc).__name__}: {exc}"
    if verdict_name == "invalid":
        windows = checked.get("windows") or []
        window = windows[0] if windows else []
        highlight = checked.get("highlight") or []
        explanation = checked.get("explanation") or _explain(checked)
        report.timeline_html(ops, window, cfg.out / "timeline.html", title, explanation, highlight, faults)
        verdict["files"]["timeline"] = "timeline.html"
    demo = checked.get("demo")
    if demo:  # not a violation: a demonstration (the lock workload's lost update without fencing)
        report.timeline_html(
            ops,
            demo["window"],
            cfg.out / "unfenced.html",
            f"{cfg.workload}: why locks need fencing",
            demo["explanation"],
            demo.get("highlight") or [],
            faults,
            "the lost update and the write that erased it",
        )
        verdict["files"]["demo"] = "unfenced.html"
    code = EXIT[verdict_name]
    if code == 0 and not converged:
        code = 2
        verdict["notes"]["exit"] = "valid history, but the cluster did not converge after healing"
    verdict["exit_code"] = code
    report.write_json(verdict, cfg.out / "verdict.json")
    unknown = counts[INFO]
    if notes.get("error"):
        stream.write(f"chaos: aborted: {notes['error']}\n")
    stream.write(
        f"chaos: {verdict_name.upper()} ({counts['ok']} ok, {counts['fail']} fail, {unknown} info; "
        f"checked in {verdict['check_s']}s); report in {cfg.out}\n"
    )
    stream.flush()
    return code, verdict


def _explain(checked: dict[str, Any]) -> str:
    invalid = checked.get("invalid") or checked.get("anomalies") or []
    if not invalid:
        return "The checker found a violation."
    first = invalid[0]
    if "explanation" in first:
        return str(first["explanation"])
    return (
        f"Key {first.get('key')!r} is not linearizable: no order of these operations, each taking effect at one "
        "instant between its invocation and its completion, gives every read the value it returned. "
        "The outlined operation is where every order runs out."
        + ("" if first.get("from_any_state") else " (The window starts at the beginning of the key's history.)")
    )


def recheck(out: Path, workload_name: str, budget_s: float = 120.0) -> tuple[int, dict[str, Any]]:
    """Checks out/history.jsonl again (another checker version, a larger budget); rewrites the timeline."""
    from chaos.history import read_jsonl

    events = read_jsonl(out / "history.jsonl")
    ops = pair(events)
    workload = registry.make(workload_name, Options(), Recorder())
    checked = workload.check(ops, budget_s)
    if checked["verdict"] == "invalid":
        faults = nemesis_windows(events, max((e.time for e in events), default=0))
        windows = checked.get("windows") or [[]]
        title = f"{workload_name}: invalid (re-checked)"
        report.timeline_html(
            ops,
            windows[0],
            out / "timeline.html",
            title,
            checked.get("explanation") or _explain(checked),
            checked.get("highlight") or [],
            faults,
        )
    return EXIT[checked["verdict"]], checked
