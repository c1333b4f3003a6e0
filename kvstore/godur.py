"""Go's time.ParseDuration and strconv.ParseBool, for etcd flags that take Go durations and booleans.

``parse_duration("1h30m")`` is 5400.0 seconds; units ns, us (µs, μs), ms, s, m, h; a sign and
fractions are allowed ("-1.5h"); "0" alone needs no unit. Errors carry Go's messages
(``time: invalid duration "x"``, ``time: missing unit in duration "1"``, ``time: unknown unit "x"
in duration "1x"``) so a bad flag is reported as etcd reports it.
"""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5
    "μs": 1e-6,  # U+03BC
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; ValueError with Go's message when it is not one."""
    quoted = '"' + text + '"'
    s = text
    sign = 1.0
    if s[:1] in ("-", "+"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0.0
    while s:
        m = _PART.match(s)
        assert m is not None
        number, unit = m.group(1), m.group(2)
        if not number or number == ".":
            raise ValueError(f"time: invalid duration {quoted}")
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        factor = _UNITS.get(unit)
        if factor is None:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        total += float(number) * factor
        s = s[m.end() :]
    return sign * total


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')
