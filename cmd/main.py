"""The ``raftkv`` command: parses the command line and hands over to the right entry point."""

from __future__ import annotations

import argparse
import sys

from kvstore import config
from kvstore.errors import StartupError


def _serve(args: argparse.Namespace, extra: list[str]) -> int:
    import uvloop

    from kvstore.server import logs
    from kvstore.server.app import serve

    try:
        cfg = config.from_args(args, extra=extra)
    except StartupError as exc:
        print(f"raftkv: {exc}", file=sys.stderr)
        return 2
    logs.configure(cfg.log_level, cfg.name)
    try:
        return uvloop.run(serve(cfg))
    except StartupError as exc:
        print(f"raftkv: cannot start: {exc}", file=sys.stderr)
        return 2


def _cluster(args: argparse.Namespace) -> int:
    from raftkv_cmd import cluster

    extra = args.member_args[1:] if args.member_args[:1] == ["--"] else args.member_args
    return cluster.run(args, extra)


def _kube(args: argparse.Namespace) -> int:
    from raftkv_cmd import kube

    return kube.main(args.kube_args)


def _chaos(args: argparse.Namespace) -> int:
    from raftkv_cmd import chaos

    return chaos.main(args.chaos_args)


def _snapshot(args: argparse.Namespace) -> int:
    from raftkv_cmd import snapshot

    return snapshot.main(args.snapshot_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftkv", description="An etcd-compatible, Raft-replicated key-value store.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one member (takes etcd's flags and ETCD_* variables)")
    config.add_flags(serve)
    serve.set_defaults(func=_serve)
    cluster = sub.add_parser(
        "cluster",
        help="start a local cluster of members on 127.0.0.1 (Ctrl-C stops it)",
        description="Starts members as child processes, prints the endpoints, streams their logs. "
        "Arguments after -- are passed to every member (etcd flags such as --snapshot-count=1000).",
    )
    from raftkv_cmd import cluster as cluster_cmd

    cluster_cmd.add_arguments(cluster)
    cluster.add_argument("member_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    cluster.set_defaults(func=_cluster)
    # Everything after "kube" goes to cmd/kube.py, imported only when used (prefix_chars: pass -h through too).
    kube = sub.add_parser("kube", add_help=False, prefix_chars="\0", help="a Kubernetes-style control plane (kube -h)")
    kube.add_argument("kube_args", nargs=argparse.REMAINDER)
    kube.set_defaults(func=_kube)
    chaos = sub.add_parser("chaos", add_help=False, prefix_chars="\0", help="Jepsen-style tests (chaos -h)")
    chaos.add_argument("chaos_args", nargs=argparse.REMAINDER)
    chaos.set_defaults(func=_chaos)
    snapshot = sub.add_parser(
        "snapshot", add_help=False, prefix_chars="\0", help="save, status, restore etcd-format snapshots (snapshot -h)"
    )
    snapshot.add_argument("snapshot_args", nargs=argparse.REMAINDER)
    snapshot.set_defaults(func=_snapshot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.func is _serve:
        return _serve(args, extra)  # names what it does not implement, with etcd's flags in mind
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
