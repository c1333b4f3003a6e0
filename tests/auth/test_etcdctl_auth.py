"""etcdctl's auth walk-through against real etcd 3.4.23 and raftkv: every output identical.

The same machinery as tests/integration/test_etcdctl_compat.py (the same narrow normalization of
ids, terms and timings): simple tokens; then client certificates whose common name is the user;
then JWT tokens signed with RS256.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.auth.certs import Pki, rsa_keys
from tests.auth.walkthrough import SIMPLE, cn_steps
from tests.integration.test_etcdctl_compat import compare, learn_ids, run_sequence
from tests.procs import ETCD, ClientTLS, EtcdMember, Process, RaftkvMember

pytestmark = [pytest.mark.integration, pytest.mark.etcd]


def side_by_side(tmp_path: Path, steps: list, extra: list[str] | None = None, tls=None) -> None:
    if ETCD is None:
        pytest.fail("etcd-server must be installed (scripts/test installs it)")
    etcd: Process = EtcdMember("ref", tmp_path / "ref.etcd", extra=extra, tls=tls).start()
    raftkv: Process = RaftkvMember("m1", tmp_path / "m1.etcd", extra=extra, tls=tls).start()
    try:
        want = run_sequence(etcd, learn_ids(etcd), steps)
        got = run_sequence(raftkv, learn_ids(raftkv), steps)
    finally:
        etcd.stop()
        raftkv.stop()
    mismatches = compare(steps, want, got)
    assert not mismatches, (
        f"raftkv differs from etcd 3.4.23 in {len(mismatches)} of {len(steps)} steps:\n\n" + "\n\n".join(mismatches)
    )
    return want


def test_simple_token_walkthrough_matches_etcd(tmp_path: Path) -> None:
    want = side_by_side(tmp_path, SIMPLE)
    # the reference must show what the walk-through is about: refusals and successes both
    assert sum("permission denied" in o.stderr for o in want) >= 15
    assert sum("user name is empty" in o.stderr for o in want) >= 4
    assert sum("authentication failed" in o.stderr for o in want) >= 4


def test_client_certificate_common_name_walkthrough_matches_etcd(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    root = pki.client("root")
    flags = {name: pki.client(name).etcdctl_args() for name in ("alice", "mallory")}
    steps = cn_steps(
        root.etcdctl_args(),
        flags["alice"],
        flags["mallory"],
        pki.foreign_client("alice").etcdctl_args(),
        pki.expired_client("alice").etcdctl_args(),
    )
    want = side_by_side(tmp_path, steps, pki.server_flags(), tls=ClientTLS(pki.ca_file, *root_paths(root)))
    assert sum("permission denied" in o.stderr for o in want) >= 4
    assert [o.code for o in want[-6:-4]] != ["exit 0", "exit 0"]  # the foreign and expired certificates fail


def root_paths(tls: ClientTLS) -> tuple[Path, Path]:
    assert tls.cert is not None and tls.key is not None
    return tls.cert, tls.key


def test_jwt_walkthrough_matches_etcd(tmp_path: Path) -> None:
    priv, pub = rsa_keys(tmp_path)
    flags = [f"--auth-token=jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"]
    want = side_by_side(tmp_path, SIMPLE, flags)
    assert sum("permission denied" in o.stderr for o in want) >= 15
