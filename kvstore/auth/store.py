"""The auth store: users, roles and whether auth is on, kept in etcd's buckets with etcd's encodings.

``auth`` holds ``authEnabled`` (``\\x01`` / ``\\x00``) and ``authRevision`` (u64 big-endian, bumped by
every change of users, roles or permissions and by AuthDisable); ``authUsers`` maps a name to an
``authpb.User`` (bcrypt hash, sorted roles, options); ``authRoles`` a name to an ``authpb.Role``
(permissions sorted by key). The store mirrors the buckets in memory, with each user's permissions
merged into read and write intervals (``kvstore.auth.perms``).

Changes happen only in ``apply`` (called by the applier, in log order, inside its write
transaction), so every member holds the same auth state at the same index. The checks
(``check_range``, ``check_put``, ``check_txn``, ``check_admin``, ...) raise etcd's errors; they are
made at apply time for writes, with the identity and auth revision the entry carries, and at
serve time for reads, as etcd makes them (``etcdserver/apply_auth.go``, ``auth/store.go``), except
that a transaction's nested transactions are checked too (etcd 3.4 does not look inside them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack
from google.protobuf.message import Message

from kvstore.auth.perms import READ, WRITE, UserPerms
from kvstore.auth.tokens import AuthInfo, SimpleTokens, TokenProvider
from kvstore.errors import (
    AuthFailed,
    AuthNameTooLong,
    AuthNotEnabled,
    AuthOldRevision,
    InvalidAuthMgmt,
    PermissionDenied,
    PermissionNotGranted,
    RoleAlreadyExist,
    RoleEmpty,
    RoleNotFound,
    RoleNotGranted,
    RootRoleNotExist,
    RootUserNotExist,
    UserAlreadyExist,
    UserEmpty,
    UserNotFound,
)
from kvstore.mvcc.backend import Backend, Txn
from proto.authpb import auth_pb2 as authpb
from proto.etcdserverpb import rpc_pb2 as pb

ROOT = "root"
AUTH, USERS, ROLES = b"auth", b"authUsers", b"authRoles"
ENABLED_KEY, REVISION_KEY = b"authEnabled", b"authRevision"
ENABLED, DISABLED = b"\x01", b"\x00"
MAX_NAME_BYTES = 511  # LMDB's key size limit
_U64 = struct.Struct(">Q")

# the admin-only requests (etcd's needAdminPermission), checked before anything else at apply
ADMIN_OPS = frozenset(
    {
        "auth_enable",
        "auth_disable",
        "user_add",
        "user_delete",
        "user_change_password",
        "user_grant_role",
        "user_revoke_role",
        "role_add",
        "role_grant_permission",
        "role_revoke_permission",
        "role_delete",
    }
)


def check_name(name: str) -> None:
    if len(name.encode()) > MAX_NAME_BYTES:
        raise AuthNameTooLong()


class AuthStore:
    def __init__(self, backend: Backend, tokens: TokenProvider | None = None) -> None:
        self.tokens: TokenProvider = tokens if tokens is not None else SimpleTokens()
        self.enabled = False
        self.revision = 1
        self.users: dict[str, authpb.User] = {}
        self.roles: dict[str, authpb.Role] = {}
        self._perms: dict[str, UserPerms] = {}
        self.reload(backend)

    def reload(self, backend: Backend) -> None:
        """Reads the state from backend (at start, and after a snapshot from the leader)."""
        self.backend = backend
        dbs = backend.dbs
        with backend.begin_read() as txn:
            enabled = txn.get(ENABLED_KEY, db=dbs[AUTH]) == ENABLED
            raw = txn.get(REVISION_KEY, db=dbs[AUTH])
            # etcd writes revision 1 when it creates the store; raftkv reads its absence as 1
            self.revision = _U64.unpack(raw)[0] if raw is not None and len(raw) == 8 else 1
            self.users = {k.decode(): authpb.User.FromString(v) for k, v in txn.cursor(db=dbs[USERS]).iternext()}
            self.roles = {k.decode(): authpb.Role.FromString(v) for k, v in txn.cursor(db=dbs[ROLES]).iternext()}
        self._refresh()
        was = self.enabled
        self.enabled = enabled
        if enabled and not was:
            self.tokens.enable()
        elif was and not enabled:
            self.tokens.disable()

    def _refresh(self) -> None:
        perms: dict[str, UserPerms] = {}
        for name, user in self.users.items():
            merged = []
            for role_name in user.roles:
                role = self.roles.get(role_name)
                if role is not None:
                    merged.extend((p.permType, p.key, p.range_end) for p in role.keyPermission)
            perms[name] = UserPerms.merge(merged)
        self._perms = perms

    # ---- reads ----

    def user_names(self) -> list[str]:
        return sorted(self.users, key=str.encode)

    def role_names(self) -> list[str]:
        return sorted(self.roles, key=str.encode)

    def has_role(self, username: str, role: str) -> bool:
        user = self.users.get(username)
        return user is not None and role in user.roles

    # ---- checks (etcd's error for each case, in etcd's order) ----

    def check_admin(self, ai: AuthInfo | None) -> None:
        if not self.enabled:
            return
        if ai is None or not ai.username:
            raise UserEmpty()
        user = self.users.get(ai.username)
        if user is None:
            raise UserNotFound()
        if ROOT not in user.roles:
            raise PermissionDenied()

    def is_admin(self, ai: AuthInfo | None) -> bool:
        try:
            self.check_admin(ai)
        except (UserEmpty, UserNotFound, PermissionDenied):
            return False
        return True

    def check_user(self, ai: AuthInfo | None) -> None:
        """Only that the caller is a user, with credentials of the current auth revision."""
        if not self.enabled:
            return
        if ai is None or ai.revision == 0:
            raise UserEmpty()
        if ai.revision < self.revision:
            raise AuthOldRevision()
        if ai.username not in self.users:
            raise PermissionDenied()

    def _check(self, ai: AuthInfo | None, key: bytes, range_end: bytes, kind: int) -> None:
        if not self.enabled:
            return
        if ai is None or ai.revision == 0:
            raise UserEmpty()
        if ai.revision < self.revision:
            raise AuthOldRevision()
        user = self.users.get(ai.username)
        if user is None:
            raise PermissionDenied()
        if ROOT in user.roles:
            return
        perms = self._perms.get(ai.username)
        if perms is None or not perms.permits(kind, key, range_end):
            raise PermissionDenied()

    def check_range(self, ai: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._check(ai, key, range_end, READ)

    def check_put(self, ai: AuthInfo | None, key: bytes) -> None:
        self._check(ai, key, b"", WRITE)

    def check_delete(self, ai: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._check(ai, key, range_end, WRITE)

    def check_txn(self, ai: AuthInfo | None, t: pb.TxnRequest) -> None:
        """Every compare and every operation of both branches, nested transactions included."""
        for c in t.compare:
            self.check_range(ai, c.key, c.range_end)
        for op in (*t.success, *t.failure):
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self.check_range(ai, op.request_range.key, op.request_range.range_end)
            elif kind == "request_put":
                self.check_put(ai, op.request_put.key)
            elif kind == "request_delete_range":
                d = op.request_delete_range
                if d.prev_kv:
                    self.check_range(ai, d.key, d.range_end)
                self.check_delete(ai, d.key, d.range_end)
            elif kind == "request_txn":
                self.check_txn(ai, op.request_txn)

    def check_lease_keys(self, ai: AuthInfo | None, keys: Any) -> None:
        """Write permission on every key attached to a lease (revoking it deletes them)."""
        for key in keys:
            self.check_put(ai, key)

    # ---- changes, in log order ----

    def apply(self, txn: Txn, kind: str, body: bytes, ai: AuthInfo | None, index: int) -> Message:
        """Applies one auth request (kind as in ADMIN_OPS, or "authenticate"); raises etcd's errors."""
        if kind in ADMIN_OPS:
            self.check_admin(ai)
        handler: Callable[[Txn, bytes, int], Message] = getattr(self, "_" + kind)
        return handler(txn, body, index)

    def _put_user(self, txn: Txn, user: authpb.User) -> None:
        self.users[user.name.decode()] = user
        txn.put(user.name, user.SerializeToString(), db=self.backend.dbs[USERS])

    def _put_role(self, txn: Txn, role: authpb.Role) -> None:
        self.roles[role.name.decode()] = role
        txn.put(role.name, role.SerializeToString(), db=self.backend.dbs[ROLES])

    def _commit_revision(self, txn: Txn) -> None:
        self.revision += 1
        txn.put(REVISION_KEY, _U64.pack(self.revision), db=self.backend.dbs[AUTH])
        self._refresh()

    def _auth_enable(self, txn: Txn, body: bytes, index: int) -> Message:
        if not self.enabled:
            root = self.users.get(ROOT)
            if root is None:
                raise RootUserNotExist()
            if ROOT not in root.roles:
                raise RootRoleNotExist()
            txn.put(ENABLED_KEY, ENABLED, db=self.backend.dbs[AUTH])
            self.enabled = True
            self.tokens.enable()
        return pb.AuthEnableResponse()

    def _auth_disable(self, txn: Txn, body: bytes, index: int) -> Message:
        if self.enabled:
            txn.put(ENABLED_KEY, DISABLED, db=self.backend.dbs[AUTH])
            self._commit_revision(txn)
            self.enabled = False
            self.tokens.disable()
        return pb.AuthDisableResponse()

    def _authenticate(self, txn: Txn, body: bytes, index: int) -> Message:
        """body: msgpack [name, simple token prefix]; the password was checked before proposing."""
        name, prefix = msgpack.unpackb(body)
        if not self.enabled:
            raise AuthNotEnabled()
        user = self.users.get(name)
        if user is None or user.options.no_password:
            raise AuthFailed()
        token = self.tokens.assign(name, self.revision, index, prefix)
        return pb.AuthenticateResponse(token=token)

    def _user_add(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthUserAddRequest.FromString(body)
        if not r.name:
            raise UserEmpty()
        check_name(r.name)
        if r.name in self.users:
            raise UserAlreadyExist()
        user = authpb.User(name=r.name.encode())
        if not r.options.no_password:
            user.password = r.hashedPassword.encode()
        user.options.SetInParent()  # present even when the request had none, as etcd stores it
        user.options.CopyFrom(r.options)
        self._put_user(txn, user)
        self._commit_revision(txn)
        return pb.AuthUserAddResponse()

    def _user_delete(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthUserDeleteRequest.FromString(body)
        if self.enabled and r.name == ROOT:
            raise InvalidAuthMgmt()
        if r.name not in self.users:
            raise UserNotFound()
        del self.users[r.name]
        txn.delete(r.name.encode(), db=self.backend.dbs[USERS])
        self._commit_revision(txn)
        self.tokens.invalidate_user(r.name)
        return pb.AuthUserDeleteResponse()

    def _user_change_password(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthUserChangePasswordRequest.FromString(body)
        user = self.users.get(r.name)
        if user is None:
            raise UserNotFound()
        updated = authpb.User(name=r.name.encode(), roles=user.roles, password=r.hashedPassword.encode())
        if user.HasField("options"):
            updated.options.CopyFrom(user.options)
        self._put_user(txn, updated)
        self._commit_revision(txn)
        self.tokens.invalidate_user(r.name)
        return pb.AuthUserChangePasswordResponse()

    def _user_grant_role(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthUserGrantRoleRequest.FromString(body)
        user = self.users.get(r.user)
        if user is None:
            raise UserNotFound()
        if r.role != ROOT and r.role not in self.roles:
            raise RoleNotFound()
        if r.role in user.roles:
            return pb.AuthUserGrantRoleResponse()
        updated = authpb.User()
        updated.CopyFrom(user)
        roles = sorted([*user.roles, r.role])
        del updated.roles[:]
        updated.roles.extend(roles)
        self._put_user(txn, updated)
        self._commit_revision(txn)
        return pb.AuthUserGrantRoleResponse()

    def _user_revoke_role(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthUserRevokeRoleRequest.FromString(body)
        if self.enabled and r.name == ROOT and r.role == ROOT:
            raise InvalidAuthMgmt()
        user = self.users.get(r.name)
        if user is None:
            raise UserNotFound()
        kept = [role for role in user.roles if role != r.role]
        if len(kept) == len(user.roles):
            raise RoleNotGranted()
        updated = authpb.User(name=user.name, password=user.password, roles=kept)
        if user.HasField("options"):
            updated.options.CopyFrom(user.options)
        self._put_user(txn, updated)
        self._commit_revision(txn)
        return pb.AuthUserRevokeRoleResponse()

    def _role_add(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthRoleAddRequest.FromString(body)
        if not r.name:
            raise RoleEmpty()
        check_name(r.name)
        if r.name in self.roles:
            raise RoleAlreadyExist()
        self._put_role(txn, authpb.Role(name=r.name.encode()))
        self._commit_revision(txn)
        return pb.AuthRoleAddResponse()

    def _role_grant_permission(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthRoleGrantPermissionRequest.FromString(body)
        role = self.roles.get(r.name)
        if role is None:
            raise RoleNotFound()
        perms = list(role.keyPermission)
        # etcd looks at the first permission whose key is not below the new one's, and only at it
        idx = next((i for i, p in enumerate(perms) if p.key >= r.perm.key), len(perms))
        if idx < len(perms) and perms[idx].key == r.perm.key and perms[idx].range_end == r.perm.range_end:
            perms[idx] = authpb.Permission(permType=r.perm.permType, key=r.perm.key, range_end=r.perm.range_end)
        else:
            perms.append(authpb.Permission(permType=r.perm.permType, key=r.perm.key, range_end=r.perm.range_end))
            perms.sort(key=lambda p: p.key)
        self._put_role(txn, authpb.Role(name=role.name, keyPermission=perms))
        self._commit_revision(txn)
        return pb.AuthRoleGrantPermissionResponse()

    def _role_revoke_permission(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthRoleRevokePermissionRequest.FromString(body)
        role = self.roles.get(r.role)
        if role is None:
            raise RoleNotFound()
        kept = [p for p in role.keyPermission if p.key != r.key or p.range_end != r.range_end]
        if len(kept) == len(role.keyPermission):
            raise PermissionNotGranted()
        self._put_role(txn, authpb.Role(name=role.name, keyPermission=kept))
        self._commit_revision(txn)
        return pb.AuthRoleRevokePermissionResponse()

    def _role_delete(self, txn: Txn, body: bytes, index: int) -> Message:
        r = pb.AuthRoleDeleteRequest.FromString(body)
        if self.enabled and r.role == ROOT:
            raise InvalidAuthMgmt()
        if r.role not in self.roles:
            raise RoleNotFound()
        del self.roles[r.role]
        txn.delete(r.role.encode(), db=self.backend.dbs[ROLES])
        for user in list(self.users.values()):
            if r.role in user.roles:
                updated = authpb.User(
                    name=user.name, password=user.password, roles=[x for x in user.roles if x != r.role]
                )
                if user.HasField("options"):
                    updated.options.CopyFrom(user.options)
                self._put_user(txn, updated)
        self._commit_revision(txn)
        return pb.AuthRoleDeleteResponse()
