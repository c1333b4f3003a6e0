"""The applier with auth: the same log gives the same auth state everywhere; writes are checked
against the identity each entry carries; entries that are not requests are skipped alike."""

from __future__ import annotations

from pathlib import Path

from kvstore.apply import Applier, Op, encode_request
from kvstore.auth import AuthStore
from kvstore.errors import AuthOldRevision, PermissionDenied, UserEmpty
from kvstore.lease import Lessor
from kvstore.mvcc import Backend, KVStore
from proto.authpb import auth_pb2 as authpb
from proto.etcdserverpb import rpc_pb2 as pb


def log() -> list[tuple[int, bytes]]:
    """A log: users and roles, auth on, then writes by root, by u1 within and outside its role."""
    perm = authpb.Permission(permType=authpb.Permission.READWRITE, key=b"k", range_end=b"l")
    ops = [
        (Op.USER_ADD, pb.AuthUserAddRequest(name="root", hashedPassword="$2b$04$x"), None),
        (Op.ROLE_ADD, pb.AuthRoleAddRequest(name="root"), None),
        (Op.USER_GRANT_ROLE, pb.AuthUserGrantRoleRequest(user="root", role="root"), None),
        (Op.USER_ADD, pb.AuthUserAddRequest(name="u1", hashedPassword="$2b$04$y"), None),
        (Op.ROLE_ADD, pb.AuthRoleAddRequest(name="r1"), None),
        (Op.ROLE_GRANT_PERMISSION, pb.AuthRoleGrantPermissionRequest(name="r1", perm=perm), None),
        (Op.USER_GRANT_ROLE, pb.AuthUserGrantRoleRequest(user="u1", role="r1"), None),
        (Op.AUTH_ENABLE, pb.AuthEnableRequest(), ("", 0)),
        (Op.PUT, pb.PutRequest(key=b"k1", value=b"u1"), ("u1", 8)),
        (Op.PUT, pb.PutRequest(key=b"x", value=b"u1"), ("u1", 8)),
        (Op.PUT, pb.PutRequest(key=b"x", value=b"anon"), ("", 0)),
        (Op.PUT, pb.PutRequest(key=b"x", value=b"root"), ("root", 8)),
        (Op.PUT, pb.PutRequest(key=b"k2", value=b"old"), ("u1", 7)),
    ]
    entries = [
        (i + 1, encode_request(op, i + 1, req.SerializeToString(), cred)) for i, (op, req, cred) in enumerate(ops)
    ]
    # not requests: one undecodable byte, a request of no known kind, a body that does not decode
    n = len(entries)
    entries += [
        (n + 1, b"\xc1"),
        (n + 2, encode_request(99, n + 2, b"")),
        (n + 3, encode_request(Op.PUT, n + 3, b"\xff\xff")),
    ]
    entries.append(
        (n + 4, encode_request(Op.PUT, n + 4, pb.PutRequest(key=b"k3", value=b"last").SerializeToString(), ("u1", 8)))
    )
    return entries


def apply(path: Path) -> tuple[list, dict, Backend]:
    backend = Backend(path)
    store = KVStore(backend)
    applier = Applier(store)
    results = dict(applier.apply([(i, 1, data) for i, data in log()]))
    return (
        results,
        {
            b: list(backend.begin_read().cursor(db=backend.dbs[b]).iternext())
            for b in (b"auth", b"authUsers", b"authRoles")
        },
        backend,
    )


def test_the_same_log_gives_the_same_auth_state_and_answers(tmp_path: Path) -> None:
    r1, buckets1, b1 = apply(tmp_path / "a")
    r2, buckets2, b2 = apply(tmp_path / "b")
    try:
        assert buckets1 == buckets2 and buckets1[b"authUsers"]
        assert [type(r).__name__ for r in r1.values()] == [type(r).__name__ for r in r2.values()]
        assert isinstance(r1[9], pb.PutResponse)  # u1 within its role
        assert isinstance(r1[10], PermissionDenied)
        assert isinstance(r1[11], UserEmpty)
        assert isinstance(r1[12], pb.PutResponse)  # root
        assert isinstance(r1[13], AuthOldRevision)  # credentials from before the last change
        assert 14 not in r1 and 15 not in r1 and 16 not in r1  # skipped alike, answered to nobody
        assert isinstance(r1[17], pb.PutResponse)  # the log goes on after them
        with b1.begin_read() as txn:
            assert txn.get(b"authEnabled", db=b1.dbs[b"auth"]) == b"\x01"
        auth = AuthStore(b1)  # and it is all there after a restart
        assert auth.enabled and auth.user_names() == ["root", "u1"] and auth.revision == 8
        assert authpb.User.FromString(dict(buckets1[b"authUsers"])[b"u1"]).roles == ["r1"]
    finally:
        b1.close()
        b2.close()


def test_the_members_own_requests_are_not_checked(tmp_path: Path) -> None:
    """Lease expiry is proposed by the leader without credentials: it revokes whatever keys the lease has."""
    backend = Backend(tmp_path / "m")
    try:
        lessor = Lessor(backend)
        applier = Applier(KVStore(backend, leases=lessor), leases=lessor)
        entries = [data for _, data in log()[:8]]  # users, roles, auth on
        grant = pb.LeaseGrantRequest(ID=5, TTL=60).SerializeToString()
        put = pb.PutRequest(key=b"x", value=b"v", lease=5).SerializeToString()
        revoke = pb.LeaseRevokeRequest(ID=5).SerializeToString()
        entries += [
            encode_request(Op.LEASE_GRANT, 9, grant, ("root", 8)),
            encode_request(Op.PUT, 10, put, ("root", 8)),
            encode_request(Op.LEASE_REVOKE, 11, revoke, ("u1", 8)),  # u1 may not delete x
            encode_request(Op.LEASE_REVOKE, 12, revoke),  # the leader's expiry
        ]
        results = dict(applier.apply([(i + 1, 1, d) for i, d in enumerate(entries)]))
        assert isinstance(results[11], PermissionDenied)
        assert isinstance(results[12], pb.LeaseRevokeResponse) and not lessor.exists(5)
    finally:
        backend.close()
