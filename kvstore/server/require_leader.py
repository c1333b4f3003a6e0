"""``hasleader`` for every method but Watch: etcd's ``WithRequireLeader`` check in its interceptors.

A call carrying gRPC metadata ``hasleader: true`` is refused with ``etcdserver: no leader``
(UNAVAILABLE) when this member knows no leader, on unary and streaming methods alike, as etcd's
unary and stream interceptors do (``v3rpc/interceptor.go``). Watch does its own check, and also
ends its streams once the leader stays lost (``kvstore.server.watch_service``, etcd's
``monitorLeader``); other streams (LeaseKeepAlive, Snapshot, Observe) are checked when they start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from frontend.grpc import Kind
from kvstore.errors import NoLeader
from kvstore.server.learner import guarded

REQUIRE_LEADER_KEY = "hasleader"  # etcd's rpctypes.MetadataRequireLeaderKey
REQUIRE_LEADER_VALUE = "true"  # etcd's rpctypes.MetadataHasLeader
SELF_CHECKED = frozenset({"Watch"})


def wants_leader(call: Any) -> bool:
    """Whether the caller asked for a member with a leader (``clientv3.WithRequireLeader``)."""
    return bool(call.metadata(REQUIRE_LEADER_KEY) == REQUIRE_LEADER_VALUE)


def leader_guard(
    name: str, kind: Kind, handler: Callable[..., Any], has_leader: Callable[[], bool]
) -> Callable[..., Any]:
    """handler, refusing a hasleader call while has_leader() says this member knows no leader."""
    if name in SELF_CHECKED:
        return handler

    def check(request: Any, call: Any) -> None:
        if not has_leader() and wants_leader(call):
            raise NoLeader()

    return guarded(kind, handler, check)
