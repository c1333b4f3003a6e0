"""What the store counts for its metrics (etcd_mvcc_*): one integer increment per operation.

A member keeps one ``MvccStats`` for its life and hands it to every store it opens (a snapshot from
the leader replaces the store, not the counts). ``keys`` is the number of live keys (etcd's
``etcd_debugging_mvcc_keys_total``), kept as keys are created and deleted, recounted on open.
"""

from __future__ import annotations


class MvccStats:
    __slots__ = ("deletes", "keys", "puts", "ranges")

    def __init__(self) -> None:
        self.puts = 0  # put operations applied (every member applies every write)
        self.deletes = 0  # delete-range operations applied
        self.ranges = 0  # ranges read (requests, and ranges inside transactions)
        self.keys = 0  # live keys
