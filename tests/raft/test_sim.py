"""The deterministic cluster simulation: many seeds, exact replay, and checkers that can fail."""

import pytest

from tests.raft.sim import LivenessViolation, SafetyViolation, SimOptions, main, run_seed

CHUNK = 50


@pytest.mark.parametrize("start", range(0, 300, CHUNK))
def test_three_nodes_many_seeds(start):
    for seed in range(start, start + CHUNK):
        run_seed(seed, SimOptions(nodes=3))


@pytest.mark.parametrize("start", range(10_000, 10_100, CHUNK))
def test_five_nodes_many_seeds(start):
    for seed in range(start, start + CHUNK):
        run_seed(seed, SimOptions(nodes=5))


def test_harsh_network_seeds():
    # Lossy network, frequent partitions and crashes.
    for seed in range(20_000, 20_030):
        run_seed(seed, SimOptions(nodes=3, drop=0.2, crash=0.01, partition=0.01))


def test_replay_is_exact():
    h1, s1 = run_seed(7)
    h2, s2 = run_seed(7)
    assert h1 == h2
    assert s1.events == s2.events and s1.max_applied == s2.max_applied
    assert run_seed(8)[0] != h1
    # the run did real work
    assert s1.max_applied > 20 and s1.events.get("leader_elected", 0) >= 1


def _first_failure(bug, seeds=range(200)):
    for seed in seeds:
        try:
            run_seed(seed, SimOptions(bug=bug))
        except (SafetyViolation, LivenessViolation) as e:
            return seed, str(e)
    return None, None


@pytest.mark.parametrize("bug", ["double_vote", "forget_fsync"])
def test_checkers_catch_injected_bug(bug):
    seed, msg = _first_failure(bug)
    assert seed is not None, f"no seed exposed bug {bug}"
    assert f"seed {seed}:" in msg
    assert f"python -m tests.raft.sim --seed {seed} -v --bug {bug}" in msg
    # replaying the seed reproduces exactly the same failure
    with pytest.raises(SafetyViolation) as again:
        run_seed(seed, SimOptions(bug=bug))
    assert str(again.value) == msg


def test_double_vote_breaks_election_safety():
    _, msg = _first_failure("double_vote")
    assert "Election Safety" in msg, msg


def test_bug_injection_is_undone():
    with pytest.raises(SafetyViolation):
        for seed in range(200):
            run_seed(seed, SimOptions(bug="double_vote"))
    # the core is whole again afterwards
    for seed in range(3):
        run_seed(seed)


def test_cli_replays_a_seed(capsys):
    assert main(["--seed", "3"]) == 0
    assert "seed 3: ok" in capsys.readouterr().out
