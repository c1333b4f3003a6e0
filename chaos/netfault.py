"""Network partitions with real dropped packets: nftables rules between members' addresses.

Members of a local cluster listen on distinct loopback addresses (127.0.0.1, 127.0.0.2, ...)
and dial their peers from their own address, so a rule "drop packets from A to B on peer
ports" cuts exactly the Raft traffic between two members while clients still reach both.
Packets are dropped, not refused: connections stall as they would across a real partition.
Needs root (CI runs as root) and the nft command (Debian package nftables).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence


class NetFaultError(RuntimeError):
    pass


class Partitioner:
    """One nftables table of drop rules; ``partition`` replaces them, ``heal`` removes them."""

    def __init__(self, peer_ports: Sequence[int], table: str | None = None, namespaces: Sequence[str] = ()) -> None:
        """namespaces: apply the rules inside each of these network namespaces (see chaos.netns)
        instead of the caller's; each member's own namespace then drops what it sends."""
        if shutil.which("nft") is None:
            raise NetFaultError("nft not found: install Debian's nftables package")
        if os.geteuid() != 0:
            raise NetFaultError("packet filtering needs root")
        self.table = table or f"raftkv_chaos_{os.getpid()}"
        self.ports = ",".join(str(p) for p in sorted(set(peer_ports)))
        self.namespaces = list(namespaces)
        self.active = False

    def _prefixes(self) -> list[list[str]]:
        return [["ip", "netns", "exec", ns] for ns in self.namespaces] or [[]]

    def _nft(self, script: str) -> None:
        for prefix in self._prefixes():
            self._nft_one(prefix, script)

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cuts peer traffic between addresses in different groups (both directions)."""
        pairs = []
        for ga, gb in itertools.combinations(range(len(groups)), 2):
            pairs.extend((a, b) for a in groups[ga] for b in groups[gb])
        self.cut(pairs)

    def cut(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Cuts peer traffic between the two addresses of each pair (both directions), and nothing else.

        Any cut, not only a partition into groups: a bridge (a - b - c with a and c cut) is one pair.
        """
        rules = []
        for x, y in pairs:
            for a, b in ((x, y), (y, x)):
                for direction in ("dport", "sport"):
                    rules.append(f"    ip saddr {a} ip daddr {b} tcp {direction} {{ {self.ports} }} drop")
        self.heal()
        script = "\n".join(
            [
                f"table inet {self.table} {{",
                "  chain output {",
                "    type filter hook output priority 0; policy accept;",
                *rules,
                "  }",
                "}",
            ]
        )
        self._nft(script)
        self.active = True

    def heal(self) -> None:
        for prefix in self._prefixes():
            exists = subprocess.run([*prefix, "nft", "list", "table", "inet", self.table], capture_output=True)
            if exists.returncode == 0:
                self._nft_one(prefix, f"delete table inet {self.table}\n")
        self.active = False

    def _nft_one(self, prefix: list[str], script: str) -> None:
        result = subprocess.run([*prefix, "nft", "-f", "-"], input=script, capture_output=True, text=True)
        if result.returncode != 0:
            raise NetFaultError(f"nft failed: {result.stderr.strip()}")
