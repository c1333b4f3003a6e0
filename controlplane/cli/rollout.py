"""``raftkv kube rollout status|history|undo|restart deployment/NAME``.

- status waits until the rollout is complete (every replica updated and available, the status
  observed at the current generation), printing progress as kubectl does.
- history lists the revisions kept as ReplicaSets (revision annotation, change-cause).
- undo puts the template of an earlier revision (the previous one, or ``--to-revision``) back
  into the Deployment; the controller then rolls forward to it, which makes it the newest revision.
- restart sets the ``kubectl.kubernetes.io/restartedAt`` template annotation, which rolls every pod.
"""

from __future__ import annotations

import argparse
import time

from controlplane.api import kinds
from controlplane.api.meta import Obj, annotations, deep_copy, is_controlled_by
from controlplane.cli.common import CliError, add_common, connect, parse_target
from controlplane.client import Client, not_found, retry_on_conflict
from controlplane.clock import REAL_CLOCK, rfc3339
from controlplane.controllers import deployutil as du


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="rollout_verb", required=True)
    for verb, help_ in (
        ("status", "wait for the rollout to finish"),
        ("history", "list revisions"),
        ("undo", "roll back to an earlier revision"),
        ("restart", "restart every pod with a rolling update"),
    ):
        sp = sub.add_parser(verb, help=help_)
        add_common(sp)
        sp.add_argument("target", nargs="+", metavar="deployment/NAME")
        if verb == "status":
            sp.add_argument("--timeout", type=float, default=0, help="seconds to wait (0: forever)")
            sp.add_argument("-w", "--watch", default="true", choices=["true", "false"])
        if verb == "undo":
            sp.add_argument("--to-revision", type=int, default=0)
        if verb == "history":
            sp.add_argument("--revision", type=int, default=0)


def _deployment(client: Client, args: argparse.Namespace) -> Obj:
    kind, name = parse_target(args.target)
    if kind is not kinds.DEPLOYMENT or not name:
        raise CliError("rollout works on deployments: deployment/NAME")
    d = client.try_get(kinds.DEPLOYMENT, args.namespace, name)
    if d is None:
        raise CliError(f"Error from server (NotFound): {not_found(kinds.DEPLOYMENT, name)}")
    return d


def _owned(client: Client, d: Obj) -> list[Obj]:
    rses, _ = client.list(kinds.REPLICA_SET, d["metadata"]["namespace"])
    return sorted((rs for rs in rses if is_controlled_by(rs, d)), key=du.revision)


def status_message(d: Obj) -> tuple[bool, str]:
    """kubectl's rollout status wording; (done, message)."""
    name = d["metadata"]["name"]
    wait = f'Waiting for deployment "{name}" rollout to finish'
    st = d.get("status") or {}
    want = d["spec"].get("replicas", 1)
    if st.get("observedGeneration", 0) < d["metadata"].get("generation", 1):
        return False, "Waiting for deployment spec update to be observed..."
    updated, total, available = st.get("updatedReplicas", 0), st.get("replicas", 0), st.get("availableReplicas", 0)
    if updated < want:
        return False, f"{wait}: {updated} out of {want} new replicas have been updated..."
    if total > updated:
        return False, f"{wait}: {total - updated} old replicas are pending termination..."
    if available < updated:
        return False, f"{wait}: {available} of {updated} updated replicas are available..."
    return True, f'deployment "{name}" successfully rolled out'


def run(args: argparse.Namespace) -> int:
    client = connect(args)
    verb = args.rollout_verb
    if verb == "status":
        return _status(client, args)
    d = _deployment(client, args)
    name = d["metadata"]["name"]
    if verb == "history":
        rses = _owned(client, d)
        if args.revision:
            match = [rs for rs in rses if du.revision(rs) == args.revision]
            if not match:
                raise CliError(f"unable to find the specified revision {args.revision}")
            from controlplane.cli.printers import to_yaml

            print(f"deployment.apps/{name} with revision #{args.revision}\nPod Template:")
            print("\n".join("  " + line for line in to_yaml(du.strip_hash(match[0]["spec"]["template"])).splitlines()))
            return 0
        print(f"deployment.apps/{name}\nREVISION  CHANGE-CAUSE")
        for rs in rses:
            print(f"{du.revision(rs):<9} {annotations(rs).get(du.CHANGE_CAUSE, '<none>')}")
        return 0
    if verb == "undo":
        return _undo(client, d, args.to_revision)
    if verb == "restart":

        def attempt() -> Obj:
            cur = _deployment(client, args)
            new = deep_copy(cur)
            tmeta = new["spec"]["template"].setdefault("metadata", {})
            tmeta.setdefault("annotations", {})["kubectl.kubernetes.io/restartedAt"] = rfc3339(REAL_CLOCK.now())
            return client.update(new)

        retry_on_conflict(attempt)
        print(f"deployment.apps/{name} restarted")
        return 0
    raise CliError(f"unknown rollout verb {verb}")


def _undo(client: Client, d: Obj, to_revision: int) -> int:
    name = d["metadata"]["name"]
    rses = _owned(client, d)
    current = du.revision(d)
    if to_revision:
        target = next((rs for rs in rses if du.revision(rs) == to_revision), None)
        if target is None:
            raise CliError(f"unable to find specified revision {to_revision} in history")
    else:
        earlier = [rs for rs in rses if du.revision(rs) < current]
        if not earlier:
            raise CliError("no rollout history found for deployment " + f'"{name}"')
        target = earlier[-1]
    if du.equal_ignore_hash(target["spec"]["template"], d["spec"]["template"]):
        print(
            f"deployment.apps/{name} skipped rollback (current template already matches revision {du.revision(target)})"
        )
        return 0

    def attempt() -> Obj:
        cur = client.get(kinds.DEPLOYMENT, d["metadata"]["namespace"], name)
        new = deep_copy(cur)
        new["spec"]["template"] = du.strip_hash(target["spec"]["template"])
        # As kubectl does: the revision's own annotations (its change-cause) come back with its template.
        for k, v in annotations(target).items():
            if k not in (
                du.REVISION,
                "deployment.kubernetes.io/desired-replicas",
                "deployment.kubernetes.io/max-replicas",
            ):
                new["metadata"].setdefault("annotations", {})[k] = v
        return client.update(new)

    retry_on_conflict(attempt)
    print(f"deployment.apps/{name} rolled back")
    return 0


def _status(client: Client, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    last = ""
    while True:
        d = _deployment(client, args)
        done, msg = status_message(d)
        if msg != last:
            print(msg, flush=True)
            last = msg
        if done:
            return 0
        if args.watch == "false":
            return 1
        if deadline is not None and time.monotonic() > deadline:
            raise CliError("timed out waiting for the condition")
        time.sleep(0.2)
