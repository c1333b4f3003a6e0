"""``raftkv snapshot save|status|restore``: etcdctl's snapshot commands (and etcdutl's), same flags.

Only parsing, wiring and printing live here; the work is in ``kvstore.snapshot``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kvstore.snapshot.errors import SnapshotError


def _humanize_bytes(size: int) -> str:
    """go-humanize's Bytes (SI units), which etcdctl prints sizes with."""
    if size < 10:
        return f"{size} B"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    exp = 0
    value = float(size)
    while value >= 1000 and exp < len(units) - 1:
        value /= 1000
        exp += 1
    rounded = int(value * 10 + 0.5) / 10
    return f"{rounded:.0f} {units[exp]}" if rounded >= 10 else f"{rounded:.1f} {units[exp]}"


def _endpoint(value: str) -> str:
    endpoints = [e.strip() for e in value.split(",") if e.strip()]
    if len(endpoints) != 1:
        raise SnapshotError(f"snapshot must be requested to one selected node, not multiple {endpoints}")
    endpoint = endpoints[0]
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            if scheme == "https://":
                raise SnapshotError("TLS endpoints are not supported yet")
            endpoint = endpoint[len(scheme) :]
    return endpoint


def _save(args: argparse.Namespace) -> int:
    import grpc

    from kvstore.snapshot.stream import save_stream
    from proto.etcdserverpb import rpc_pb2 as pb
    from proto.etcdserverpb import rpc_pb2_grpc

    endpoint = _endpoint(args.endpoints)
    with grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", 2**31 - 1)]) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.dial_timeout)
        except grpc.FutureTimeoutError:
            raise SnapshotError(f"cannot reach {endpoint} within {args.dial_timeout:g}s") from None
        responses = rpc_pb2_grpc.MaintenanceStub(channel).Snapshot(pb.SnapshotRequest())
        try:
            save_stream((r.blob for r in responses), Path(args.file))
        except grpc.RpcError as exc:
            raise SnapshotError(f"snapshot stream from {endpoint} failed: {exc.details()}") from None
    print(f"Snapshot saved at {args.file}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from kvstore.bbolt import BboltError, BoltFile
    from kvstore.snapshot.snapshot_file import status

    path = Path(args.file)
    if not path.exists():
        raise SnapshotError(f"stat {path}: no such file or directory")
    try:
        with BoltFile.open(path) as db:
            problems = db.check()
            if problems:
                raise SnapshotError(
                    f"snapshot file integrity check failed. {len(problems)} errors found.\n" + "\n".join(problems)
                )
            st = status(db)
    except BboltError as exc:
        raise SnapshotError(str(exc)) from exc
    if args.write_out == "json":
        fields = {"hash": st.hash, "revision": st.revision, "totalKey": st.total_key, "totalSize": st.total_size}
        print(json.dumps(fields, separators=(",", ":")))
    elif args.write_out == "table":
        cells = [f"{st.hash:x}", str(st.revision), str(st.total_key), _humanize_bytes(st.total_size)]
        heads = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"]
        widths = [max(len(h), len(c)) + 2 for h, c in zip(heads, cells, strict=True)]
        rule = "+" + "+".join("-" * w for w in widths) + "+"
        print(rule)
        print("|" + "|".join(h.center(w) for h, w in zip(heads, widths, strict=True)) + "|")
        print(rule)
        print("|" + "|".join((c + " ").rjust(w) for c, w in zip(cells, widths, strict=True)) + "|")
        print(rule)
    elif args.write_out == "fields":
        print(f'"Hash" : {st.hash}\n"Revision" : {st.revision}\n"Keys" : {st.total_key}\n"Size" : {st.total_size}')
    else:
        print(f"{st.hash:x}, {st.revision}, {st.total_key}, {_humanize_bytes(st.total_size)}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from kvstore.snapshot.restore import RestoreConfig, restore

    cfg = RestoreConfig(
        snapshot=Path(args.file),
        name=args.name,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        initial_cluster=args.initial_cluster or f"{args.name}={args.initial_advertise_peer_urls}",
        initial_cluster_token=args.initial_cluster_token,
        initial_advertise_peer_urls=args.initial_advertise_peer_urls,
        skip_hash_check=args.skip_hash_check,
    )
    result = restore(cfg)
    for name in result.skipped_buckets:
        print(f"note: bucket {name.decode(errors='replace')!r} is not part of etcd's backend; not restored")
    print(
        f"restored snapshot {args.file} into {result.data_dir} (member {result.member_id:x} of cluster "
        f"{result.cluster_id:x}, revision {result.revision}, {result.keys} stored revisions, {result.leases} leases)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftkv snapshot", description="Manages etcd-format snapshots.")
    sub = parser.add_subparsers(dest="verb", required=True)
    save = sub.add_parser("save", help="stores a snapshot of a member's backend to a file")
    save.add_argument("file")
    save.add_argument("--endpoints", default="127.0.0.1:2379", help="the one member to take the snapshot from")
    save.add_argument("--dial-timeout", type=float, default=2.0, help="seconds to wait for the connection")
    save.set_defaults(func=_save)
    status = sub.add_parser("status", help="hash, revision, total keys and size of a snapshot file")
    status.add_argument("file")
    status.add_argument("-w", "--write-out", choices=["simple", "json", "table", "fields"], default="simple")
    status.set_defaults(func=_status)
    restore = sub.add_parser("restore", help="builds a new member data directory from a snapshot (raftkv's or etcd's)")
    restore.add_argument("file")
    restore.add_argument("--name", default="default", help="human-readable name for this member")
    restore.add_argument("--data-dir", default="", help="the data directory to create (default: <name>.etcd)")
    restore.add_argument(
        "--initial-cluster", default="", help="the new cluster, name=peer-url,... (default: <name>=<peer urls>)"
    )
    restore.add_argument("--initial-cluster-token", default="etcd-cluster")
    restore.add_argument("--initial-advertise-peer-urls", default="http://localhost:2380")
    restore.add_argument(
        "--skip-hash-check", action="store_true", help="accept a file without a sha256 (a db copied from a data dir)"
    )
    restore.set_defaults(func=_restore)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SnapshotError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
