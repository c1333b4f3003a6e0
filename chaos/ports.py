"""Ports for the servers a harness starts (tests, chaos runs, benchmarks): ones nothing else is given meanwhile.

``bind(("127.0.0.1", 0))`` returns a port from the kernel's ephemeral range, which the kernel also
hands out as the source port of outgoing connections (and to other processes' ``bind(0)``):
between a harness picking a port and its server binding it, a connection on a busy machine can
take it, and the member dies with "address already in use". So ports come from just below that
range, from a block of 500 that each process locks for itself (a lock file per block, in the
temp dir, that every other process using this module respects), in turn, and only if a bind probe
on every address succeeds. One allocator for every launcher: two of them in one machine, or one
pytest run beside a chaos run, never hand out the same port.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path


def _port_range() -> range:
    """Ports below the kernel's ephemeral range: never picked by bind(0) or as a connection's source port."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12_000), low)


_PORTS = _port_range()
_BLOCK = 500  # ports per process
_block: range | None = None
_block_lock = -1  # fd of the block's lock file, held until this process exits
_next = 0


def _reserve_block() -> range:
    """Locks one block of _PORTS for this process (one lock file per block, which other
    processes respect): two harnesses on one machine never hand out the same port."""
    global _block, _block_lock
    if _block is None:
        locks = Path(tempfile.gettempdir()) / "raftkv-ports"
        locks.mkdir(exist_ok=True)
        starts = list(range(_PORTS.start, _PORTS.stop - _BLOCK + 1, _BLOCK))
        first = os.getpid() % len(starts)
        for start in starts[first:] + starts[:first]:
            fd = os.open(locks / f"{start}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            _block, _block_lock = range(start, start + _BLOCK), fd
            break
        else:
            raise RuntimeError(f"every block of ports in {_PORTS} is taken by another process")
    return _block


def free_port() -> int:
    """A port nothing else is given meanwhile: handed out in turn from this process's block (a
    port comes round again only after the 500 others), and only if nothing is bound to it or
    lingering on it on any address at the time."""
    global _next
    block = _reserve_block()
    for _ in range(len(block)):
        port = block[_next % len(block)]
        _next += 1
        try:
            with socket.socket() as s:
                s.bind(("0.0.0.0", port))  # in use on any address (or in TIME_WAIT) means taken
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port in {block}")
