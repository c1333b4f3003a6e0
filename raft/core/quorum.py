"""Pure majority-quorum maths: which index is committed, who won an election.

No state here, only functions over a set of voter ids and what each voter reported.
Single-step membership changes mean one majority config at a time (thesis §4.1).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import IntEnum


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest index that a majority of voters has durably replicated (§5.3).

    An empty voter set commits everything (it imposes no constraint), as etcd does.
    """
    n = len(voters)
    if n == 0:
        return 1 << 64
    if n == 1:
        (v,) = voters
        return match.get(v, 0)
    srt = sorted((match.get(v, 0) for v in voters), reverse=True)
    return srt[n // 2]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant (§5.2)."""
    n = len(voters)
    if n == 0:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        r = votes.get(v)
        if r is None:
            continue
        if r:
            granted += 1
        else:
            rejected += 1
    q = n // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if n - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING
