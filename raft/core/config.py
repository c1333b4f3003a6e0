"""Config: the parameters of one Raft node, and the injected randomness it uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from raft.core.errors import ConfigError
from raft.core.types import NONE, ConfState


class RandomSource(Protocol):
    """Where election jitter comes from; `random.Random(seed)` fits."""

    def randrange(self, n: int, /) -> int: ...


class SplitMix64:
    """A tiny deterministic RandomSource, used when the caller injects none."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & 0xFFFFFFFFFFFFFFFF

    def randrange(self, n: int, /) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return (z ^ (z >> 31)) % n


@dataclass(slots=True)
class Config:
    """Parameters of a node. Ticks are the unit of time; the driver decides how long one is.

    - election_tick: followers campaign after a randomized [election_tick, 2*election_tick)
      ticks without hearing from a leader (§5.2). Must exceed heartbeat_tick.
    - heartbeat_tick: a leader sends heartbeats every heartbeat_tick ticks.
    - applied: the last index the state machine has already applied (restart only).
    - conf_state: the membership as of `applied`, when the state machine keeps it (restart
      only). Without it the core replays the conf change entries up to `applied` on top of
      the snapshot's ConfState, which is only right if every one of them took effect; an
      application that rejects some changes (applying them as no-ops) must pass it.
    - max_size_per_msg: bytes of entries per MsgApp (at least one entry is always sent).
    - max_committed_size_per_ready: bytes of committed entries per Ready.
    - max_uncommitted_entries_size: a leader drops proposals beyond this many uncommitted
      payload bytes (0: unlimited).
    - max_inflight_msgs: MsgApp in flight per follower in replicate state.
    - check_quorum: a leader steps down when it has not heard from a quorum in an election
      timeout; followers ignore votes while they have a live leader (thesis §6.2, §4.2.3).
    - pre_vote: run a PreVote round before bumping the term (thesis §9.6).
    - rng: the randomness of election timeouts; by default a generator seeded with `id`.
    - read_only_lease_based: answer ReadIndex from the leader lease, without a heartbeat
      round (needs check_quorum; relies on bounded clock drift).
    - disable_proposal_forwarding: followers drop proposals instead of forwarding them.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    conf_state: ConfState | None = None
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = 8 << 20
    max_uncommitted_entries_size: int = 0
    max_inflight_msgs: int = 256
    check_quorum: bool = True
    pre_vote: bool = True
    rng: RandomSource | None = None
    read_only_lease_based: bool = False
    disable_proposal_forwarding: bool = False

    def validate(self) -> None:
        if self.id == NONE or self.id < 0:
            raise ConfigError("cannot use 0 (NONE) or a negative number as id")
        if self.heartbeat_tick <= 0:
            raise ConfigError("heartbeat_tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs must be greater than 0")
        if self.read_only_lease_based and not self.check_quorum:
            raise ConfigError("read_only_lease_based needs check_quorum")
        if self.applied < 0:
            raise ConfigError("applied must not be negative")
