"""Receiving a snapshot stream into a file, as ``etcdctl snapshot save`` does, transport-free.

The blobs of Maintenance.Snapshot responses are written to ``<path>.part``; the whole is then
checked (the sha256 etcd appends must be there and match, and the bbolt file must pass its
integrity check), synced, and only then renamed to ``path``. A broken stream or a bad snapshot
leaves no file at ``path`` and no ``.part`` behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from kvstore.snapshot.errors import SnapshotError
from kvstore.snapshot.snapshot_file import has_checksum, open_snapshot


def save_stream(blobs: Iterable[bytes], path: Path) -> int:
    """Writes the blobs to path via a .part file, verified; returns the file's size."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "wb") as f:
            size = 0
            for blob in blobs:
                f.write(blob)
                size += len(blob)
            f.flush()
            os.fsync(f.fileno())
        if not has_checksum(size):
            raise SnapshotError(f"sha256 checksum not found [bytes: {size}]")
        with open_snapshot(part):
            pass
        os.rename(part, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return size
