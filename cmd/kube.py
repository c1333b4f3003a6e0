"""``raftkv kube``: the control plane's verbs (wiring only; see controlplane.cli)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

VERBS = (
    ("apply", "create or update objects from a manifest (multi-document YAML)"),
    ("get", "list objects, or watch them with -w"),
    ("describe", "show one object in detail"),
    ("delete", "delete objects (what they own is garbage collected)"),
    ("scale", "set a deployment's replica count"),
    ("rollout", "rollout status, history, undo, restart"),
    ("logs", "print a container's output"),
    ("up", "start the controller-manager, the scheduler and two node agents"),
)
COMPONENTS = (
    ("controller-manager", "run the controllers (with leader election)"),
    ("scheduler", "run the scheduler"),
    ("agent", "run a node agent (a small kubelet)"),
)


def _module(verb: str) -> Any:
    import importlib

    return importlib.import_module(f"controlplane.cli.{verb}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftkv kube",
        description="A Kubernetes-style control plane whose only state is the store (raftkv or etcd). "
        "Every verb takes --endpoints (default: $ETCDCTL_ENDPOINTS or 127.0.0.1:2379).",
    )
    sub = parser.add_subparsers(dest="kube_verb", required=True, metavar="VERB")
    for verb, help_ in VERBS:
        p = sub.add_parser(verb, help=help_, description=help_)
        _module(verb).add_arguments(p)
        p.set_defaults(kube_run=_module(verb).run)
    from controlplane.cli import components

    for verb, help_ in COMPONENTS:
        p = sub.add_parser(verb, help=help_, description=help_)
        if verb == "agent":
            components.add_agent_arguments(p)
            p.set_defaults(kube_run=components.run_agent)
        elif verb == "scheduler":
            components.add_manager_arguments(p, "kube-scheduler")
            p.set_defaults(kube_run=components.run_scheduler_cmd)
        else:
            components.add_manager_arguments(p, "kube-controller-manager")
            p.set_defaults(kube_run=components.run_controller_manager)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from controlplane.api.validation import ValidationError
    from controlplane.cli.common import CliError
    from controlplane.store.base import StoreError

    fn: Callable[[argparse.Namespace], int] = args.kube_run
    try:
        return fn(args)
    except CliError as exc:
        msg = str(exc)
        print(msg if msg.startswith("Error from server") else f"error: {msg}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
