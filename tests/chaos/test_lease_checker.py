"""chaos.checker.lease on hand-made histories: each rule it checks, valid and violated."""

from __future__ import annotations

from typing import Any

from chaos.checker import lease
from chaos.history import Operation, Recorder, pair

S = 1_000_000_000


class History:
    """Operations at chosen times (seconds), each invoked and completed at once or later."""

    def __init__(self) -> None:
        self.now = 0
        self.rec = Recorder(clock=lambda: self.now)

    def op(self, at: float, f: str, value: Any, out: Any = None, took: float = 0.01, process: int = 1) -> None:
        self.now = int(at * S)
        inv = self.rec.invoke(process, f, value)
        self.now = int((at + took) * S)
        self.rec.ok(inv, out)

    def ops(self) -> list[Operation]:
        return pair(self.rec.events)


def granted(h: History, lid: int = 1, ttl: int = 3) -> None:
    h.op(0.0, "lease-grant", {"lease": lid, "ttl": ttl}, {"lease": lid, "ttl": ttl})
    h.op(0.1, "lease-put", {"key": "k", "value": "v", "lease": lid}, {"revision": 2})


def final_read(h: History, at: float, present: bool) -> None:
    value = {"key": "k", "value": "v" if present else None, "lease": 1 if present else 0}
    h.op(at, "lease-read", {"key": "k"}, value, process=lease.FINAL_PROCESS)


def test_a_lease_that_expired_in_time_is_valid() -> None:
    h = History()
    granted(h)
    h.op(1.0, "lease-keepalive", {"lease": 1}, {"lease": 1, "ttl": 3})
    final_read(h, 20.0, present=False)
    assert lease.check(h.ops(), grace=4.0)["verdict"] == lease.VALID


def test_a_key_still_there_long_after_its_ttl_never_expired() -> None:
    h = History()
    granted(h)
    final_read(h, 20.0, present=True)
    out = lease.check(h.ops(), grace=4.0)
    assert out["verdict"] == lease.INVALID
    assert out["violations"][0]["type"] == "never-expired"


def test_a_leader_change_gives_the_lease_its_ttl_again() -> None:
    h = History()
    granted(h)
    final_read(h, 20.0, present=True)
    # a new leader's lessor was promoted at 15 s: the lease may live until 15 + 3 + grace
    assert lease.check(h.ops(), grace=4.0, promotions=[15 * S])["verdict"] == lease.VALID
    # one before the grant's deadline changes nothing
    assert lease.check(h.ops(), grace=4.0, promotions=[1 * S])["verdict"] == lease.INVALID


def test_a_key_gone_before_the_renewal_promised_is_an_early_expiry() -> None:
    h = History()
    granted(h, ttl=10)
    h.op(2.0, "lease-read", {"key": "k"}, {"key": "k", "value": None, "lease": 0})
    out = lease.check(h.ops())
    assert out["verdict"] == lease.INVALID
    assert out["violations"][0]["type"] == "early-expiry"


def test_a_renewal_after_the_lease_was_revoked_is_a_resurrection() -> None:
    h = History()
    granted(h)
    h.op(0.5, "lease-revoke", {"lease": 1}, None)
    h.op(1.0, "lease-keepalive", {"lease": 1}, {"lease": 1, "ttl": 3})
    out = lease.check(h.ops())
    assert out["verdict"] == lease.INVALID
    assert out["violations"][0]["type"] == "resurrected"
