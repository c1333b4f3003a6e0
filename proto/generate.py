"""Regenerates the Python code for the etcd-compatible .proto files in this folder.

Run from anywhere: ``python -m proto.generate`` (or ``python proto/generate.py``). The output is
written next to each .proto file; ``--out DIR`` writes it under DIR instead, which the
staleness test uses to compare a fresh generation with what is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = (
    "proto/mvccpb/kv.proto",
    "proto/authpb/auth.proto",
    "proto/etcdserverpb/rpc.proto",
    "proto/leasepb/lease.proto",
    "proto/v3lockpb/v3lock.proto",
    "proto/v3electionpb/v3election.proto",
)
# Files protoc writes for each .proto (relative to the output root, with .proto removed).
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_files() -> list[str]:
    """Relative paths of every file generation produces."""
    return [p[: -len(".proto")] + suffix for p in PROTO_FILES for suffix in GENERATED_SUFFIXES]


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # imported late: only the generator needs grpcio-tools

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{REPO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository)")
    generate(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
