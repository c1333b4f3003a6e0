"""``raftkv kube apply -f FILE``: create each object, or update it to match the manifest.

An object that exists gets the manifest's labels, annotations and spec (its status and
server-set metadata are kept); a write that meets a newer resourceVersion is retried on the
latest version. Every document is validated before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from controlplane.api import kinds
from controlplane.api.meta import Obj, deep_copy, name, namespace
from controlplane.cli import manifest
from controlplane.cli.common import CliError, add_common, connect
from controlplane.client import Client, retry_on_conflict
from controlplane.store.base import AlreadyExists, Conflict

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-node-lease", "kube-public")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("-f", "--filename", action="append", required=True, help="manifest file, directory or - for stdin")


def apply_one(client: Client, obj: Obj) -> str:
    """Creates or updates one object; returns "created", "configured" or "unchanged"."""
    kind = kinds.for_object(obj)
    ns = namespace(obj) if kind.namespaced else None
    if ns and ns not in SYSTEM_NAMESPACES and client.try_get(kinds.NAMESPACE, None, ns) is None:
        raise CliError(f'namespaces "{ns}" not found')
    result = "created"

    def attempt() -> Obj:
        nonlocal result
        cur = client.try_get(kind, ns, name(obj))
        if cur is None:
            try:
                result = "created"
                return client.create(obj)
            except AlreadyExists:
                raise Conflict("created concurrently") from None
        new = deep_copy(cur)
        for f in ("labels", "annotations"):
            if f in obj["metadata"]:
                new["metadata"][f] = obj["metadata"][f]
        if "spec" in obj:
            new["spec"] = obj["spec"]
        out = client.update(new)
        result = (
            "unchanged" if out["metadata"]["resourceVersion"] == cur["metadata"]["resourceVersion"] else "configured"
        )
        return out

    retry_on_conflict(attempt)
    return result


def run(args: argparse.Namespace) -> int:
    docs = manifest.load(args.filename, args.namespace)
    client = connect(args)
    for doc in docs:
        obj = doc.obj
        result = apply_one(client, obj)
        print(f"{kinds.for_object(obj).qualified}/{name(obj)} {result}")
    sys.stdout.flush()
    return 0
