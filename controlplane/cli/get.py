"""``raftkv kube get TYPE [NAME] [-n NS | -A] [-l SELECTOR] [-o wide|yaml|json|name] [-w]``."""

from __future__ import annotations

import argparse
import sys
import time

from controlplane.api import kinds
from controlplane.api.meta import Obj, labels, namespace, parse_selector, selector_matches
from controlplane.cli import printers
from controlplane.cli.common import CliError, add_common, connect, ns_for, parse_target
from controlplane.client import Client, decode, not_found
from controlplane.clock import REAL_CLOCK
from controlplane.store.base import Compacted, StoreError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("target", nargs="+", metavar="TYPE[/NAME] [NAME]")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default=None, help="label selector, e.g. app=web,tier!=db")
    p.add_argument("-o", "--output", default="", choices=["", "wide", "yaml", "json", "name"])
    p.add_argument("-w", "--watch", action="store_true", help="after listing, print changes as they happen")


def run(args: argparse.Namespace) -> int:
    kind, name = parse_target(args.target)
    client = connect(args)
    ns = None if args.all_namespaces else ns_for(kind, args)
    selector = parse_selector(args.selector) if args.selector else None
    with_ns = args.all_namespaces and kind.namespaced and args.output in ("", "wide")
    if name:
        obj = client.try_get(kind, ns, name)
        if obj is None:
            raise CliError(f"Error from server (NotFound): {not_found(kind, name)}")
        objs = [obj]
        rev = int(obj["metadata"]["resourceVersion"])
    else:
        objs, rev = client.list(kind, ns)
        if selector:
            objs = [o for o in objs if selector_matches(selector, labels(o))]
        if not objs and not args.watch:
            where = f" in {ns} namespace" if ns else ""
            print(f"No resources found{where}.", file=sys.stderr)
            return 0
    out = printers.render(kind, objs, args.output, REAL_CLOCK.now(), single=bool(name), with_namespace=with_ns)
    if out:
        print(out, flush=True)
    if not args.watch:
        return 0
    return _watch(client, kind, ns, name, selector, args.output, rev, with_ns)


def _watch(
    client: Client,
    kind: kinds.Kind,
    ns: str | None,
    name: str | None,
    selector: Obj | None,
    output: str,
    rev: int,
    with_ns: bool,
) -> int:
    store = client.store
    try:
        while True:
            try:
                for resp in store.watch(kind.prefix(ns), rev + 1):
                    rev = resp.revision
                    for ev in resp.events:
                        if ev.type == "DELETE":
                            continue  # kubectl prints the last state of deleted objects only with --output-watch-events
                        obj = decode(ev.kv)
                        if name and obj["metadata"].get("name") != name:
                            continue
                        if ns and namespace(obj) != ns:
                            continue
                        if selector and not selector_matches(selector, labels(obj)):
                            continue
                        if output in ("", "wide"):
                            row = printers.row(kind, obj, output == "wide", REAL_CLOCK.now(), with_ns)
                            print(printers.table([row]), flush=True)
                        else:
                            print(printers.render(kind, [obj], output, REAL_CLOCK.now(), single=True), flush=True)
                            if output == "yaml":
                                print("---", flush=True)
            except Compacted:
                _, rev = store.list(kind.prefix(ns))
            except StoreError:
                time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
