"""What every verb shares: --endpoints, a connected client, TYPE/NAME arguments, errors, ages."""

from __future__ import annotations

import argparse
from datetime import datetime

from controlplane.api import kinds
from controlplane.client import Client
from controlplane.clock import REAL_CLOCK, parse_rfc3339
from controlplane.store.etcd import EtcdStore, endpoints_from


class CliError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 1."""


def add_common(p: argparse.ArgumentParser, namespaced: bool = True) -> None:
    p.add_argument(
        "--endpoints",
        default=None,
        help="store endpoints, comma separated (default: $ETCDCTL_ENDPOINTS or 127.0.0.1:2379)",
    )
    if namespaced:
        p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")


def connect(args: argparse.Namespace) -> Client:
    store = EtcdStore(endpoints_from(getattr(args, "endpoints", None)), timeout=5.0, retry_for=10.0)
    return Client(store)


def parse_target(words: list[str]) -> tuple[kinds.Kind, str | None]:
    """``deployment/web``, ``deployment web``, ``pods`` -> (kind, name or None)."""
    if not words:
        raise CliError("you must specify the type of resource, e.g. pods, deployments, nodes")
    first = words[0]
    try:
        if "/" in first:
            k, name = first.split("/", 1)
            return kinds.lookup(k), name
        return kinds.lookup(first), (words[1] if len(words) > 1 else None)
    except kinds.UnknownKind as exc:
        raise CliError(str(exc)) from None


def ns_for(kind: kinds.Kind, args: argparse.Namespace) -> str | None:
    return getattr(args, "namespace", "default") if kind.namespaced else None


def age(ts: str | None, now: datetime | None = None) -> str:
    """kubectl's short durations: 45s, 3m12s, 2h5m, 4d."""
    if not ts:
        return "<unknown>"
    secs = int(((now or REAL_CLOCK.now()) - parse_rfc3339(ts)).total_seconds())
    secs = max(secs, 0)
    if secs < 120:
        return f"{secs}s"
    if secs < 600:
        return f"{secs // 60}m{secs % 60}s" if secs % 60 else f"{secs // 60}m"
    if secs < 3 * 3600:
        return f"{secs // 60}m"
    if secs < 8 * 3600:
        return f"{secs // 3600}h{(secs % 3600) // 60}m"
    if secs < 2 * 86400:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"
