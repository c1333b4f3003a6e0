"""CI's run of the whole-member simulator: the correct build passes its seeds, every injected bug is caught.

The seed budget is what CI can afford (about a minute on a 2-core machine): ``CI_SEEDS`` seeds of the
correct build with no violation, and each injected bug (``tests.sim.bugs``) failing on one of its
first ``BUG_BUDGET`` seeds with the kind of violation that bug must cause. Every run is seeded, so
the outcome is the same on every machine; a failure's message carries the seed and its replay
command (``python -m tests.sim --seed N``).
"""

from __future__ import annotations

import shlex

import pytest

from tests.sim import cli
from tests.sim.bugs import BUGS
from tests.sim.run import SimOptions, Simulation, SimulationFailed

# the coroutines of a killed process's tasks that never ran are dropped with their run (tests.sim.cli)
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")

CI_SEEDS = 300
CHUNK = 50
BUG_BUDGET = 50  # an injected bug must fail one of seeds 0..BUG_BUDGET-1
# what each bug must be caught as (the start of the violation)
CAUGHT_AS = {
    "stale-reads": ("not linearizable",),
    # a follower that acknowledged entries it then lost: the leader's commit runs past its log (the
    # core refuses, as etcd's raft panics "tocommit is out of range"), or the history shows it
    "ack-before-fsync": ("unexpected exception in a member: AssertionError('commit", "not linearizable", "watch:"),
    "tombstone-dropped": ("watch:",),
    "lost-catch-up": ("watch:",),
}


def first_failure(bug: str, budget: int) -> SimulationFailed | None:
    opts = SimOptions(bug=bug)
    for seed in range(budget):
        try:
            Simulation(seed, opts).run()
        except SimulationFailed as exc:
            return exc
    return None


@pytest.mark.parametrize("start", range(0, CI_SEEDS, CHUNK))
def test_the_correct_build_passes_every_seed(start: int) -> None:
    failures = []
    for seed in range(start, start + CHUNK):
        try:
            Simulation(seed).run()
        except SimulationFailed as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures[:3])


@pytest.mark.parametrize("bug", BUGS)
def test_each_injected_bug_is_caught_within_the_budget(bug: str) -> None:
    exc = first_failure(bug, BUG_BUDGET)
    assert exc is not None, f"--bug {bug} passed all of seeds 0..{BUG_BUDGET - 1}: the simulator no longer catches it"
    assert exc.what.startswith(CAUGHT_AS[bug]), f"--bug {bug} was caught as something else: {exc}"
    print(f"{bug}: first failing seed {exc.seed}: {exc.what[:120]}")


def test_a_seed_replays_exactly() -> None:
    assert Simulation(7).run() == Simulation(7).run()
    failures = []
    for _ in range(2):
        sim = Simulation(3, SimOptions(bug="lost-catch-up"))
        with pytest.raises(SimulationFailed) as info:
            sim.run()
        failures.append((str(info.value), sim.trace_digest))
    assert failures[0] == failures[1]


def test_a_failing_seed_prints_its_replay_command_and_the_command_replays_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exc = first_failure("stale-reads", BUG_BUDGET)
    assert exc is not None
    assert "minimal trace:" in exc.trace and exc.trace.count("\n") >= 2
    argv = shlex.split(exc.replay)
    assert argv[:3] == ["python", "-m", "tests.sim"]
    assert cli.main([a for a in argv[3:] if a != "-v"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL seed {exc.seed}: {exc.what}\n")
    assert f"trace hash: {exc.digest}\n" in out  # the same run, event for event
