"""``raftkv kube delete TYPE NAME... | -f FILE``: delete objects; what they own is garbage collected."""

from __future__ import annotations

import argparse

from controlplane.api import kinds
from controlplane.api.meta import name, namespace
from controlplane.cli import manifest
from controlplane.cli.common import CliError, add_common, connect, ns_for, parse_target
from controlplane.client import not_found


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("target", nargs="*", metavar="TYPE[/NAME] [NAME...]")
    p.add_argument("-f", "--filename", action="append", help="delete the objects a manifest names")
    p.add_argument("--ignore-not-found", action="store_true")


def run(args: argparse.Namespace) -> int:
    client = connect(args)
    targets: list[tuple[kinds.Kind, str | None, str]] = []
    if args.filename:
        for doc in manifest.load(args.filename, args.namespace):
            k = kinds.for_object(doc.obj)
            targets.append((k, namespace(doc.obj) if k.namespaced else None, name(doc.obj)))
    if args.target:
        if "/" in args.target[0]:
            for t in args.target:
                kind, n = parse_target([t])
                targets.append((kind, ns_for(kind, args), n or ""))
        else:
            kind, _ = parse_target(args.target[:1])
            if len(args.target) < 2:
                raise CliError("resource(s) were provided, but no name was specified")
            targets += [(kind, ns_for(kind, args), n) for n in args.target[1:]]
    if not targets:
        raise CliError("you must provide one or more resources by argument or filename")
    code = 0
    for kind, ns, n in targets:
        if client.delete(kind, ns, n):
            print(f'{kind.qualified} "{n}" deleted')
        elif not args.ignore_not_found:
            print(f"Error from server (NotFound): {not_found(kind, n)}")
            code = 1
    return code
