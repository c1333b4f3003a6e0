"""Deliberately unsafe server behaviour, to prove the chaos checkers can fail. Never set in production.

A sibling of ``raft.failpoints``: armed only by an environment variable, a no-op otherwise.

``RAFTKV_UNSAFE`` holds a comma-separated list of modes, read once at import by the server:

- ``stale-reads``: linearizable reads skip the ReadIndex round and serve the member's local
  state, as a serializable read does (``kvstore.server.member.Member.read_barrier``). A
  follower behind the leader, or a member cut off from the others, answers with old values.
- ``ack-before-fsync``: a follower acknowledges appended entries before they are in its WAL,
  and persists them ``RAFTKV_UNSAFE_PERSIST_DELAY_MS`` later (default 300;
  ``raft.node.RaftNode._handle``). A leader counts such acknowledgements towards commit,
  so when followers crash together their acknowledged entries are gone and a leader elected
  among them overwrites what clients were told was committed.

An unknown mode stops the server at start: a typo must not quietly give a safe run.
"""

from __future__ import annotations

import os

ENV_VAR = "RAFTKV_UNSAFE"
DELAY_VAR = "RAFTKV_UNSAFE_PERSIST_DELAY_MS"
MODES = frozenset({"stale-reads", "ack-before-fsync"})


def parse(spec: str) -> frozenset[str]:
    modes = frozenset(m.strip() for m in spec.split(",") if m.strip())
    unknown = modes - MODES
    if unknown:
        raise ValueError(f"{ENV_VAR}: unknown mode(s) {sorted(unknown)} (known: {', '.join(sorted(MODES))})")
    return modes


ACTIVE = parse(os.environ.get(ENV_VAR, ""))
STALE_READS = "stale-reads" in ACTIVE
ACK_BEFORE_FSYNC = "ack-before-fsync" in ACTIVE
PERSIST_DELAY_S = int(os.environ.get(DELAY_VAR, "300")) / 1000
