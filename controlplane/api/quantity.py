"""Resource quantities as Kubernetes writes them: cpu in cores or millicores, memory in bytes with suffixes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": Decimal("0.001"),
}
_QUANTITY = re.compile(r"^([+]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")


def parse(q: str | int | float) -> Decimal:
    """The quantity's value in base units; ValueError with Kubernetes' wording when malformed."""
    if isinstance(q, bool):
        raise ValueError("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    if isinstance(q, int | float):
        return Decimal(str(q))
    m = _QUANTITY.match(str(q).strip())
    if not m:
        raise ValueError("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise ValueError(f"invalid number {m.group(1)!r}") from None
    return number * Decimal(_SUFFIXES[m.group(2) or ""])


def cpu_millis(q: str | int | float) -> int:
    return int((parse(q) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def memory_bytes(q: str | int | float) -> int:
    return int(parse(q).to_integral_value(rounding="ROUND_CEILING"))


def format_cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(n: int) -> str:
    for suffix in ("Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if n and n % int(unit) == 0:
            return f"{n // int(unit)}{suffix}"
    return str(n)


def pod_requests(pod: dict) -> tuple[int, int]:
    """(cpu millicores, memory bytes) requested by a pod's containers (quantities assumed valid)."""
    cpu = mem = 0
    for c in pod.get("spec", {}).get("containers") or []:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += cpu_millis(req.get("cpu", 0))
        mem += memory_bytes(req.get("memory", 0))
    return cpu, mem
