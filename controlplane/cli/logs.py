"""``raftkv kube logs POD [-c CONTAINER] [-f] [--tail N] [-p]``: a container's output.

The node agent writes each container's output to a file under the directory its Node
advertises in the ``raftkv.io/pod-log-dir`` annotation (agents and the CLI share a machine).
``-p`` is not needed to see a restarted container's earlier output: the file is appended to.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from controlplane.agent import LOG_DIR_ANNOTATION
from controlplane.api import kinds
from controlplane.api.meta import annotations
from controlplane.cli.common import CliError, add_common, connect
from controlplane.client import not_found
from controlplane.runtime import pod_dir_name


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("pod", metavar="POD")
    p.add_argument("-c", "--container", default=None)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=-1)


def run(args: argparse.Namespace) -> int:
    client = connect(args)
    pod_name = args.pod.split("/", 1)[1] if args.pod.startswith(("pod/", "pods/", "po/")) else args.pod
    pod = client.try_get(kinds.POD, args.namespace, pod_name)
    if pod is None:
        raise CliError(f"Error from server (NotFound): {not_found(kinds.POD, pod_name)}")
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = args.container or containers[0]
    if container not in containers:
        raise CliError(f"container {container} is not valid for pod {pod_name}")
    if args.container is None and len(containers) > 1:
        print(f'Defaulted container "{container}" out of: {", ".join(containers)}', file=sys.stderr)
    node_name = pod["spec"].get("nodeName")
    if not node_name:
        raise CliError(f'pod "{pod_name}" is not scheduled yet')
    node = client.try_get(kinds.NODE, None, node_name)
    log_dir = annotations(node).get(LOG_DIR_ANNOTATION) if node else None
    if not log_dir:
        raise CliError(f"node {node_name} does not say where its logs are")
    path = Path(log_dir) / pod_dir_name(pod) / f"{container}.log"
    if not path.exists():
        raise CliError(f'container "{container}" in pod "{pod_name}" is waiting to start')
    with open(path, "rb") as f:
        data = f.read()
        lines = data.splitlines(keepends=True)
        if args.tail >= 0:
            lines = lines[-args.tail :] if args.tail else []
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.flush()
        if not args.follow:
            return 0
        try:
            while True:
                chunk = f.read()
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return 0
