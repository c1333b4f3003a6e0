"""``raftkv kube scale deployment/NAME --replicas=N`` (also replicasets)."""

from __future__ import annotations

import argparse

from controlplane.api import kinds
from controlplane.api.meta import Obj, deep_copy
from controlplane.cli.common import CliError, add_common, connect, ns_for, parse_target
from controlplane.client import not_found, retry_on_conflict


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("target", nargs="+", metavar="TYPE/NAME | TYPE NAME")
    p.add_argument("--replicas", type=int, required=True)


def run(args: argparse.Namespace) -> int:
    kind, name = parse_target(args.target)
    if kind not in (kinds.DEPLOYMENT, kinds.REPLICA_SET):
        raise CliError(f"cannot scale {kind.resource}: only deployments and replicasets scale")
    if name is None:
        raise CliError("you must specify the name of the resource to scale")
    if args.replicas < 0:
        raise CliError("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
    client = connect(args)
    ns = ns_for(kind, args)

    def attempt() -> Obj:
        cur = client.try_get(kind, ns, name)
        if cur is None:
            raise CliError(f"Error from server (NotFound): {not_found(kind, name)}")
        new = deep_copy(cur)
        new["spec"]["replicas"] = args.replicas
        return client.update(new)

    retry_on_conflict(attempt)
    print(f"{kind.qualified}/{name} scaled")
    return 0
