"""Rate-limited structured warnings: what the transport logs about misbehaving peers and connections."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("raftkv.transport")


class LogLimiter:
    """Structured warnings, at most one per key per interval, counting what was suppressed."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def log(self, level: int, key: object, msg: str, exc_info: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        fields["suppressed"] = self._suppressed.pop(key, 0)
        log.log(level, msg, extra=fields, exc_info=exc_info)
