"""Auth travels with snapshots both ways between raftkv and etcd 3.4.23, and is enforced at once.

raftkv with auth enabled -> ``etcdctl snapshot save`` -> ``etcdctl snapshot restore`` -> a real etcd
that refuses an anonymous read, refuses the user outside its role, and accepts root's password
(raftkv's bcrypt hashes, checked by etcd). And etcd with auth enabled -> ``raftkv snapshot restore``
-> raftkv does the same with etcd's users, roles and hashes (this restore used to be refused).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proto.authpb import auth_pb2 as authpb
from proto.etcdserverpb import rpc_pb2 as pb
from proto.etcdserverpb import rpc_pb2_grpc as rpc
from tests.integration.test_snapshot_etcd import etcdctl_restore, raftkv_restore, started_on_restore
from tests.procs import ETCD, ETCDCTL, EtcdMember, Process, RaftkvMember, etcdctl

pytestmark = [pytest.mark.integration, pytest.mark.etcd]


def secure(member: Process) -> None:
    with member.channel() as ch:
        a = rpc.AuthStub(ch)
        rpc.KVStub(ch).Put(pb.PutRequest(key=b"k1", value=b"v1"))
        rpc.KVStub(ch).Put(pb.PutRequest(key=b"secret", value=b"s"))
        a.UserAdd(pb.AuthUserAddRequest(name="root", password="rootpw"))
        a.RoleAdd(pb.AuthRoleAddRequest(name="root"))
        a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
        a.UserAdd(pb.AuthUserAddRequest(name="u1", password="u1pw"))
        a.RoleAdd(pb.AuthRoleAddRequest(name="r1"))
        perm = authpb.Permission(permType=authpb.Permission.READ, key=b"k", range_end=b"l")
        a.RoleGrantPermission(pb.AuthRoleGrantPermissionRequest(name="r1", perm=perm))
        a.UserGrantRole(pb.AuthUserGrantRoleRequest(user="u1", role="r1"))
        a.AuthEnable(pb.AuthEnableRequest())


def enforced(member: Process) -> list[tuple[int, str]]:
    def run(*args: str) -> tuple[int, str]:
        r = etcdctl(member.endpoint, *args)
        return r.returncode, (r.stdout or r.stderr.strip().splitlines()[-1])

    return [
        run("get", "k1"),
        run("--user=u1:u1pw", "get", "k1"),
        run("--user=u1:u1pw", "get", "secret"),
        run("--user=root:rootpw", "get", "secret"),
        run("--user=root:wrong", "get", "secret"),
    ]


EXPECTED = [
    (1, "Error: etcdserver: user name is empty"),
    (0, "k1\nv1\n"),
    (1, "Error: etcdserver: permission denied"),
    (0, "secret\ns\n"),
    (2, "Error: etcdserver: authentication failed, invalid user ID or password"),
]


@pytest.mark.parametrize("source_kind", ["raftkv", "etcd"])
def test_auth_travels_with_the_snapshot(tmp_path: Path, source_kind: str) -> None:
    if ETCD is None or ETCDCTL is None:
        pytest.fail("etcd-server and etcd-client must be installed")
    source: Process = (RaftkvMember if source_kind == "raftkv" else EtcdMember)("src", tmp_path / "src.etcd")
    source.start()
    snap = tmp_path / "snap.db"
    try:
        secure(source)
        assert enforced(source) == EXPECTED
        saved = etcdctl(source.endpoint, "--user=root:rootpw", "snapshot", "save", str(snap))
        assert saved.returncode == 0, saved.stderr
    finally:
        source.stop()
    if source_kind == "raftkv":
        target: Process = EtcdMember("dst", tmp_path / "dst.etcd")
        restored = started_on_restore(target, etcdctl_restore(snap))
    else:
        target = RaftkvMember("dst", tmp_path / "dst.etcd")
        restored = started_on_restore(target, raftkv_restore(snap))
    try:
        assert enforced(restored) == EXPECTED
    finally:
        restored.stop()
