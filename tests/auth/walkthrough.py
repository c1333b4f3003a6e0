"""The auth walk-through run against etcd 3.4.23 and raftkv side by side (tests/auth/test_etcdctl_auth.py).

Users, roles, permissions (keys, ranges, prefixes, from-key), enable, denied, wrong passwords,
role changes taking effect at once, password changes, deletions, every error etcd has for bad
management, no-password users, and disable. ``R`` is root's password flag, ``U`` u1's.
"""

from __future__ import annotations

from proto.etcdserverpb import rpc_pb2 as pb
from tests.integration.test_etcdctl_compat import Step, ctl, rpc, txn

ROOT = "--user=root:rootpw"
U1 = "--user=u1:u1pw"


def as_(user: str, *args: str, stdin: bytes | None = None) -> Step:
    return ctl(user, *args, stdin=stdin)


SIMPLE: list[Step] = [
    # --- before auth: management by anyone, and enable's preconditions
    ctl("put", "foo", "bar"),
    ctl("auth", "enable"),
    ctl("user", "add", "root:rootpw", "--interactive=false"),
    ctl("user", "add", "root:again", "--interactive=false"),
    # etcdctl's own auth enable would make and grant the root role itself on this error
    rpc("AuthEnable", pb.AuthEnableRequest(), service="Auth"),
    ctl("role", "add", "root"),
    ctl("role", "add", "root"),
    ctl("user", "grant-role", "root", "root"),
    ctl("user", "grant-role", "root", "root"),
    ctl("user", "grant-role", "nobody", "root"),
    ctl("user", "grant-role", "root", "nope"),
    ctl("user", "get", "root"),
    ctl("user", "get", "root", "-w", "json"),
    ctl("user", "list"),
    ctl("role", "list", "-w", "json"),
    ctl("role", "get", "root"),
    ctl("role", "get", "nope"),
    ctl("user", "get", "nope"),
    ctl("user", "add", "u1:u1pw", "--interactive=false"),
    ctl("role", "add", "r1"),
    ctl("role", "grant-permission", "r1", "read", "k", "--prefix"),
    ctl("role", "grant-permission", "r1", "write", "w"),
    ctl("role", "grant-permission", "r1", "readwrite", "rw1", "rw5"),
    ctl("role", "grant-permission", "r1", "read", "z", "--from-key"),
    ctl("role", "grant-permission", "r1", "read", "k", "--prefix"),  # again: updated in place
    ctl("role", "get", "r1"),
    ctl("role", "get", "r1", "-w", "json"),
    ctl("user", "grant-role", "u1", "r1"),
    ctl("user", "get", "u1", "--detail"),
    ctl("auth", "enable"),
    ctl("auth", "enable"),  # enabled already: needs credentials now
    as_(ROOT, "auth", "enable"),
    # --- nobody, wrong passwords, unknown users
    ctl("get", "foo"),
    ctl("put", "foo", "x"),
    ctl("del", "foo"),
    ctl("user", "list"),
    ctl("role", "add", "r9"),
    as_("--user=root:wrong", "get", "foo"),
    as_("--user=ghost:pw", "get", "foo"),
    as_("--user=root", "--password=rootpw", "get", "foo"),
    # --- root may do anything
    as_(ROOT, "put", "foo", "bar2"),
    as_(ROOT, "get", "foo"),
    as_(ROOT, "put", "k1", "v1"),
    as_(ROOT, "put", "w", "v1"),
    as_(ROOT, "put", "rw2", "v1"),
    as_(ROOT, "put", "zz", "v1"),
    as_(ROOT, "user", "list"),
    as_(ROOT, "role", "list"),
    # --- u1 within and outside its permissions
    as_(U1, "get", "k1"),
    as_(U1, "get", "k", "--prefix"),
    as_(U1, "get", "k1", "-w", "json"),
    as_(U1, "put", "k1", "x"),
    as_(U1, "put", "w", "mine"),
    as_(U1, "get", "w"),
    as_(U1, "del", "w"),
    as_(U1, "put", "w", "again", "--prev-kv"),
    as_(U1, "get", "rw1", "rw5"),
    as_(U1, "get", "rw1", "rw6"),
    as_(U1, "get", "rw0", "rw5"),
    as_(U1, "put", "rw3", "x"),
    as_(U1, "put", "rw5", "x"),
    as_(U1, "del", "rw1", "rw5"),
    as_(U1, "del", "rw1", "rw5", "--prev-kv"),
    as_(U1, "get", "z", "--from-key"),
    as_(U1, "get", "zz"),
    as_(U1, "get", "y", "--from-key"),
    as_(U1, "get", "foo"),
    as_(U1, "get", "", "--prefix"),
    as_(U1, "user", "list"),
    as_(U1, "user", "get", "u1"),
    as_(U1, "user", "get", "root"),
    as_(U1, "role", "get", "r1"),
    as_(U1, "role", "get", "root"),
    as_(U1, "role", "list"),
    as_(U1, "user", "add", "u9:x", "--interactive=false"),
    as_(U1, "auth", "disable"),
    as_(U1, "compaction", "2"),
    # --- transactions: every compare and every operation is checked
    txn(['value("k1") = "v1"'], ['get "k1"'], ['get "k2"']),
    as_(U1, "txn", stdin=b'value("k1") = "v1"\n\nget "k1"\n\nget "k2"\n\n'),
    as_(U1, "txn", stdin=b'value("foo") = "bar2"\n\nget "k1"\n\n\n'),
    as_(U1, "txn", stdin=b'value("k1") = "v1"\n\nput "rw2" "t"\n\n\n'),
    as_(U1, "txn", stdin=b'value("k1") = "v1"\n\nput "k1" "t"\n\n\n'),
    as_(U1, "txn", stdin=b'value("k1") = "v1"\n\nget "k1"\n\nput "foo" "t"\n\n'),
    as_(U1, "txn", stdin=b'value("k1") = "v1"\n\ndel "rw1" "rw5"\n\n\n'),
    # --- a permission change takes effect at once
    as_(ROOT, "role", "revoke-permission", "r1", "w"),
    as_(ROOT, "role", "revoke-permission", "r1", "w"),
    as_(ROOT, "role", "revoke-permission", "nope", "w"),
    as_(U1, "put", "w", "after-revoke"),
    as_(ROOT, "role", "grant-permission", "r1", "readwrite", "w"),
    as_(U1, "put", "w", "after-grant"),
    as_(U1, "get", "w"),
    as_(ROOT, "user", "revoke-role", "u1", "r1"),
    as_(ROOT, "user", "revoke-role", "u1", "r1"),
    as_(U1, "get", "k1"),
    as_(ROOT, "user", "grant-role", "u1", "r1"),
    as_(U1, "get", "k1"),
    # --- what root may not do to itself while auth is on
    as_(ROOT, "user", "delete", "root"),
    as_(ROOT, "role", "delete", "root"),
    as_(ROOT, "user", "revoke-role", "root", "root"),
    as_(ROOT, "user", "delete", "nobody"),
    as_(ROOT, "role", "delete", "nope"),
    # --- passwords: a changed one, a user without one
    as_(ROOT, "user", "passwd", "u1", "--interactive=false", stdin=b"newpw\n"),
    as_(ROOT, "user", "passwd", "nobody", "--interactive=false", stdin=b"pw\n"),
    as_(U1, "get", "k1"),
    as_("--user=u1:newpw", "get", "k1"),
    as_(ROOT, "user", "add", "cn-only", "--no-password"),
    as_(ROOT, "user", "get", "cn-only"),
    as_(ROOT, "user", "grant-role", "cn-only", "r1"),
    as_("--user=cn-only:anything", "get", "k1"),
    # --- deleting a role takes it from its users; deleting a user ends its access
    as_(ROOT, "role", "add", "r2"),
    as_(ROOT, "user", "grant-role", "u1", "r2"),
    as_(ROOT, "role", "delete", "r2"),
    as_(ROOT, "user", "get", "u1"),
    as_(ROOT, "user", "delete", "u1"),
    as_("--user=u1:newpw", "get", "k1"),
    as_(ROOT, "user", "list", "-w", "json"),
    # --- disable: open again to everyone
    as_(ROOT, "auth", "disable"),
    ctl("auth", "disable"),
    ctl("get", "foo"),
    ctl("put", "foo", "open"),
    ctl("user", "list"),
    ctl("role", "get", "r1"),
    as_(ROOT, "get", "foo"),
    ctl("user", "delete", "root"),
    ctl("auth", "enable"),
    ctl("get", "", "--prefix", "-w", "json"),
]


REFUSED_HANDSHAKE_TIMEOUTS = ("--dial-timeout=2s", "--command-timeout=4s")

def cn_steps(
    root: list[str], alice: list[str], mallory: list[str], foreign: list[str], expired: list[str]
) -> list[Step]:
    """Client certificates whose common name is the user (--client-cert-auth): each list holds the
    etcdctl flags of one client certificate (root, alice, mallory who is no user, one from another
    CA, an expired one)."""
    return [
        ctl(*root, "user", "add", "root:rootpw", "--interactive=false"),
        ctl(*root, "role", "add", "root"),
        ctl(*root, "user", "grant-role", "root", "root"),
        ctl(*root, "user", "add", "alice", "--no-password"),
        ctl(*root, "role", "add", "ra"),
        ctl(*root, "role", "grant-permission", "ra", "readwrite", "a", "--prefix"),
        ctl(*root, "user", "grant-role", "alice", "ra"),
        ctl(*root, "auth", "enable"),
        ctl(*root, "put", "a1", "by-root"),
        ctl(*root, "put", "b1", "by-root"),
        ctl(*root, "user", "list"),
        ctl(*alice, "get", "a1"),
        ctl(*alice, "put", "a2", "by-alice"),
        ctl(*alice, "get", "a", "--prefix"),
        ctl(*alice, "get", "b1"),
        ctl(*alice, "put", "b1", "x"),
        ctl(*alice, "user", "list"),
        ctl(*alice, "user", "get", "alice"),
        ctl(*alice, "--user=root:rootpw", "get", "b1"),  # a token wins over the certificate
        ctl(*alice, "--user=alice:pw", "get", "a1"),
        ctl(*mallory, "get", "a1"),
        ctl(*mallory, "put", "a3", "x"),
        # refused at the handshake: etcdctl retries until its deadlines, so short ones (the
        # suite's generous defaults bound hangs, and these are sure to be refused)
        ctl(*foreign, *REFUSED_HANDSHAKE_TIMEOUTS, "get", "a1"),
        ctl(*expired, *REFUSED_HANDSHAKE_TIMEOUTS, "get", "a1"),
        ctl(*root, "role", "revoke-permission", "ra", "a", "--prefix"),
        ctl(*alice, "get", "a1"),
        ctl(*root, "auth", "disable"),
        ctl(*mallory, "get", "a", "--prefix"),
    ]
