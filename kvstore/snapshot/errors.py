"""The error of the snapshot layer: a snapshot file that cannot be used, or a restore that cannot be
done. The message names the file or directory and the problem; nothing has been half-written."""

from __future__ import annotations


class SnapshotError(Exception):
    """A snapshot is truncated, corrupt or not etcd's format, or a restore's target or flags are wrong."""
