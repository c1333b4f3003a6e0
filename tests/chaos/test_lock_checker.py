"""The lock checker: the fenced resource must be exact; the unfenced one's losses are reported."""

from __future__ import annotations

from chaos.checker.lock import check
from chaos.history import FAIL, OK
from tests.chaos.histories import Builder


class LockBuilder(Builder):
    def __init__(self) -> None:
        super().__init__()
        self.t = 0

    def hold(
        self,
        p: int,
        lease: int,
        token: int,
        entry: int,
        unfenced_read: list[int],
        fenced_read: list[int] | None,
        length: int = 30,
        stalled: bool = False,
        fence: int = 0,
    ) -> None:
        t = self.t
        self.op(p, "acquire", {"lease": lease}, t, t + 5, OK, {"lease": lease, "token": token})
        u = {"entry": entry, "token": token}
        self.op(p, "unfenced", u, t + 6, t + length, OK, {**u, "read": unfenced_read, "stalled": stalled})
        if fenced_read is None:
            self.op(
                p,
                "fenced",
                u,
                t + length + 1,
                t + length + 4,
                FAIL,
                {**u, "refused": "read", "fence": str(fence).zfill(20)},
            )
        else:
            self.op(p, "fenced", u, t + length + 1, t + length + 4, OK, {**u, "read": fenced_read})
        self.op(p, "release", {"lease": lease, "token": token}, t + length + 5, t + length + 6, OK)
        self.t += 10

    def final(self, unfenced: list[int], fenced: list[int]) -> None:
        self.t += 1000
        for m in range(3):
            self.op(1_000_000 + m, "final-read", {}, self.t, self.t + 1, OK, {"unfenced": unfenced, "fenced": fenced})


def test_serial_holders_are_valid_and_safe() -> None:
    b = LockBuilder()
    b.t = 0
    b.hold(0, 100, 5, 1, [], [], length=10)
    b.t = 100
    b.hold(1, 101, 9, 2, [1], [1], length=10)
    b.final([1, 2], [1, 2])
    result = check(b.operations())
    assert result["verdict"] == "valid", result
    assert not result["unsafe_without_fencing"]
    assert result["unfenced"]["overlapping_holds"] == 0


def test_a_stalled_holder_loses_an_unfenced_update_and_is_refused_by_the_fence() -> None:
    b = LockBuilder()
    b.t = 0
    b.hold(0, 100, 5, 1, [], None, length=500, stalled=True, fence=9)  # reads [], stalls, writes [1] late
    b.t = 100
    b.hold(1, 101, 9, 2, [], [], length=10)  # took over when the lease expired
    b.final([1], [2])
    result = check(b.operations())
    assert result["verdict"] == "valid", result["violations"]
    assert result["unsafe_without_fencing"]
    assert result["unfenced"]["lost_updates"] == 1
    assert result["fenced"]["refused_by_fence"] == 1
    assert "erasing entry 2" in result["demo"]["explanation"]


def test_fenced_resource_violations() -> None:
    b = LockBuilder()
    b.t = 0
    b.hold(0, 100, 5, 1, [], [], length=10)
    b.t = 100
    b.hold(1, 101, 9, 2, [1], [1], length=10)
    b.t = 200
    b.hold(2, 102, 12, 3, [1, 2], None, length=10, fence=15)
    b.final([1, 2], [2, 3])  # entry 1 lost, entry 3 was refused, token order broken
    result = check(b.operations())
    assert result["verdict"] == "invalid"
    assert {"fenced-lost", "fenced-refused", "fenced-interleaved"} <= set(result["violation_counts"])


def test_tokens_must_follow_real_time() -> None:
    b = LockBuilder()
    b.t = 0
    b.hold(0, 100, 9, 1, [], [], length=10)
    b.t = 100
    b.hold(1, 101, 5, 2, [1], [1], length=10)  # acquired later, smaller token
    b.final([1, 2], [1, 2])
    result = check(b.operations())
    assert "token-order" in result["violation_counts"]


def test_no_final_read_is_unknown() -> None:
    b = LockBuilder()
    b.hold(0, 100, 5, 1, [], [])
    assert check(b.operations())["verdict"] == "unknown"
