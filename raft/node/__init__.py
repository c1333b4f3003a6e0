"""The asyncio driver of one Raft member: it feeds the pure core and carries out its Readies.

Inputs go straight into the ``RawNode`` as they arrive on the event loop (ticks from a timer,
peer messages from the transport, proposals and read requests from the server), and one task
handles the Readies, strictly in order. Modules:

- ``driver``: ``RaftNode``, the node as the server sees it (``raft.api.ReplicatedLog``): lifecycle,
  what the server reads, membership, requests to peers, the node's fatal end;
- ``recovery``: start-up, the WAL reconciled with what the state machine applied;
- ``inputs``: ticks, peer messages and snapshots, proposals, conf changes, leader transfers;
- ``reads``: linearizable reads batched into ReadIndex rounds;
- ``ready``: the Ready loop (persist, send, apply, install snapshots, compact the log).

Membership: a committed conf change is first given to the state machine, which decides whether
it takes effect; the application tells the node who its peers are (``set_peers``) and which ids
were removed. A member that applies its own removal stops a moment later; one that a peer tells it
was removed (the transport's REMOVED) stops at once. Either way ``fatal`` is resolved with
``RemovedError``. ``apply_paused`` holds back the application of committed entries (they queue, in
order) while Raft goes on; the member uses it to swap its backend file (defragmentation). A
failure to persist (a failed fsync, a full disk) or a bug in apply stops the node: ``fatal`` is
resolved and nothing more is acknowledged. The member process then exits.
"""

from raft.node.driver import REMOVED_STOP_DELAY, RaftNode
from raft.node.reads import READ_ROUND_TIMEOUT
from raft.node.ready import CATCH_UP_ENTRIES
from raft.node.recovery import MAX_UNCOMMITTED_BYTES

__all__ = ["CATCH_UP_ENTRIES", "MAX_UNCOMMITTED_BYTES", "READ_ROUND_TIMEOUT", "REMOVED_STOP_DELAY", "RaftNode"]
