"""A private network for a local cluster: one network namespace per member, joined by a bridge.

Members that cannot choose the source address of their outgoing connections (etcd dials its
peers from whatever address the kernel picks, 127.0.0.1 on loopback) cannot be told apart by
address on loopback, so packet filters there cannot partition them. Here each member runs in
its own namespace with its own address on a bridge that exists only on this machine, so every
packet between members carries its sender's address, and nftables rules inside each
namespace (``chaos.netfault.Partitioner(namespaces=...)``) drop exactly the traffic between
the members being cut. Clients in the root namespace reach the members through the bridge.

Everything is created by ``up`` and removed by ``down``; the names carry this process's id, and
``down`` also runs at interpreter exit as a backstop. Needs root and iproute2.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
from pathlib import Path

from chaos.cluster import LocalCluster, MemberProcess

# A subnet that exists only on the bridge below; 10.213.N.0/24 with N picked free at start.
SUBNET_PREFIX = "10.213"


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class PrivateNetwork:
    """A bridge and ``size`` namespaces, member i at SUBNET.(i+1), the root namespace at SUBNET.254."""

    def __init__(self, size: int, tag: str | None = None) -> None:
        if os.geteuid() != 0:
            raise NetnsError("network namespaces need root")
        self.size = size
        self.tag = tag or f"rkc{os.getpid() % 100000}"
        self.bridge = self.tag
        self.namespaces = [f"{self.tag}-m{i + 1}" for i in range(size)]
        self.subnet = self._free_subnet()
        self.active = False

    def host(self, i: int) -> str:
        return f"{self.subnet}.{i + 1}"

    @property
    def hosts(self) -> list[str]:
        return [self.host(i) for i in range(self.size)]

    def _free_subnet(self) -> str:
        used = set(re.findall(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.", _ip("-o", "addr").stdout))
        for n in range(1, 255):
            if str(n) not in used:
                return f"{SUBNET_PREFIX}.{n}"
        raise NetnsError("no free subnet for a private network")

    def up(self) -> None:
        self.down()
        self.active = True
        atexit.register(self.down)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, ns in enumerate(self.namespaces):
            outside, inside = f"{self.tag}m{i + 1}h", f"{self.tag}m{i + 1}p"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", ns, "addr", "add", f"{self.host(i)}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)  # takes the veth pair with it
        _ip("link", "del", self.bridge, check=False)
        self.active = False

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[i]]


class NetnsCluster(LocalCluster):
    """A LocalCluster whose member i runs inside namespace i of a PrivateNetwork, on etcd's default ports.

    ``ip netns exec`` replaces itself with the member, so the child's pid is the member's and
    signals reach it directly.
    """

    def __init__(self, base_dir: Path, network: PrivateNetwork, **kwargs: object) -> None:
        size = network.size
        super().__init__(base_dir, size=size, ports=[(2379, 2380)] * size, **kwargs)  # type: ignore[arg-type]
        self.network = network
        self._index: dict[str, int] = {}
        for i, m in enumerate(self.members):
            m.host = network.host(i)
            self._index[m.name] = i

    def argv(self, m: MemberProcess) -> list[str]:
        return [*self.network.exec_prefix(self._index[m.name]), *super().argv(m)]
