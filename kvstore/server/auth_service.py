"""The etcd Auth service: enable, disable and status, Authenticate, users and roles.

Changes go through the log like any write, carrying the caller's identity, and are checked and
applied by ``kvstore.auth.AuthStore`` (admin only, as etcd's ``needAdminPermission``). Passwords are
hashed (UserAdd, UserChangePassword) and checked (Authenticate) with bcrypt on worker threads,
bounded (``kvstore.auth.passwords``), before anything is proposed: the log holds bcrypt hashes,
never a password. Authenticate is etcd's: a linearizable read barrier, the password check, then
an entry that makes every member register the token; if the auth revision moved meanwhile the
check is made again. Reads (UserGet, UserList, RoleGet, RoleList, AuthStatus) are answered locally
after a read barrier, with etcd's rules: listing needs admin; a user may read itself and the roles
it has.
"""

from __future__ import annotations

import msgpack
from google.protobuf.message import Message

from frontend.grpc import ServerCall
from kvstore.apply import Op
from kvstore.auth import AuthInfo
from kvstore.auth.store import check_name
from kvstore.errors import AuthFailed, AuthNotEnabled, EtcdError, NoPasswordUser, RoleNotFound, UserNotFound
from kvstore.server.member import Member
from proto.etcdserverpb import rpc_pb2 as pb

MAX_AUTHENTICATE_ATTEMPTS = 10


class AuthService:
    def __init__(self, member: Member) -> None:
        self.member = member

    async def _propose(self, op: Op, request: Message, call: ServerCall) -> object:
        member = self.member
        cred = await member.credentials.for_log(call)
        resp = await member.propose(op, request.SerializeToString(), cred)
        member.fill_header(resp.header)  # type: ignore[attr-defined]
        return resp

    async def _reader(self, call: ServerCall) -> AuthInfo | None:
        await self.member.read_barrier()
        return await self.member.credentials.resolve(call)

    # ---- enable, disable, status ----

    async def AuthEnable(self, request: pb.AuthEnableRequest, call: ServerCall) -> object:
        return await self._propose(Op.AUTH_ENABLE, request, call)

    async def AuthDisable(self, request: pb.AuthDisableRequest, call: ServerCall) -> object:
        return await self._propose(Op.AUTH_DISABLE, request, call)

    async def AuthStatus(self, request: pb.AuthStatusRequest, call: ServerCall) -> pb.AuthStatusResponse:
        await self.member.read_barrier()
        auth = self.member.auth
        resp = pb.AuthStatusResponse(enabled=auth.enabled, authRevision=auth.revision)
        self.member.fill_header(resp.header)
        return resp

    # ---- authenticate ----

    async def Authenticate(self, request: pb.AuthenticateRequest, call: ServerCall) -> object:
        member = self.member
        auth = member.auth
        for _ in range(MAX_AUTHENTICATE_ATTEMPTS):
            await member.read_barrier()
            if not auth.enabled:
                raise AuthNotEnabled()
            user = auth.users.get(request.name)
            if user is None:
                raise AuthFailed()
            if user.options.no_password:
                raise NoPasswordUser()
            checked = auth.revision
            if not await member.passwords.check(user.password, request.password):
                raise AuthFailed()
            body = msgpack.packb([request.name, auth.tokens.gen_prefix()])
            resp = await member.propose(Op.AUTHENTICATE, body)
            if checked == auth.revision:  # else a change (a new password?) came in between: check again
                member.fill_header(resp.header)  # type: ignore[attr-defined]
                return resp
        raise AuthFailed()

    # ---- users ----

    async def UserAdd(self, request: pb.AuthUserAddRequest, call: ServerCall) -> object:
        req = pb.AuthUserAddRequest(name=request.name)
        req.options.CopyFrom(request.options)
        if request.name:
            check_name(request.name)
            if not request.options.no_password:
                req.hashedPassword = (await self.member.passwords.hash(request.password)).decode()
        return await self._propose(Op.USER_ADD, req, call)

    async def UserDelete(self, request: pb.AuthUserDeleteRequest, call: ServerCall) -> object:
        return await self._propose(Op.USER_DELETE, request, call)

    async def UserChangePassword(self, request: pb.AuthUserChangePasswordRequest, call: ServerCall) -> object:
        req = pb.AuthUserChangePasswordRequest(name=request.name)
        if request.name in self.member.auth.users:  # hash only for a user that exists
            req.hashedPassword = (await self.member.passwords.hash(request.password)).decode()
        return await self._propose(Op.USER_CHANGE_PASSWORD, req, call)

    async def UserGrantRole(self, request: pb.AuthUserGrantRoleRequest, call: ServerCall) -> object:
        return await self._propose(Op.USER_GRANT_ROLE, request, call)

    async def UserRevokeRole(self, request: pb.AuthUserRevokeRoleRequest, call: ServerCall) -> object:
        return await self._propose(Op.USER_REVOKE_ROLE, request, call)

    async def UserGet(self, request: pb.AuthUserGetRequest, call: ServerCall) -> pb.AuthUserGetResponse:
        ai = await self._reader(call)
        auth = self.member.auth
        try:
            auth.check_admin(ai)
        except EtcdError:
            if ai is None or request.name != ai.username:
                raise
        user = auth.users.get(request.name)
        if user is None:
            raise UserNotFound()
        resp = pb.AuthUserGetResponse(roles=user.roles)
        self.member.fill_header(resp.header)
        return resp

    async def UserList(self, request: pb.AuthUserListRequest, call: ServerCall) -> pb.AuthUserListResponse:
        ai = await self._reader(call)
        auth = self.member.auth
        auth.check_admin(ai)
        resp = pb.AuthUserListResponse(users=auth.user_names())
        self.member.fill_header(resp.header)
        return resp

    # ---- roles ----

    async def RoleAdd(self, request: pb.AuthRoleAddRequest, call: ServerCall) -> object:
        return await self._propose(Op.ROLE_ADD, request, call)

    async def RoleDelete(self, request: pb.AuthRoleDeleteRequest, call: ServerCall) -> object:
        return await self._propose(Op.ROLE_DELETE, request, call)

    async def RoleGrantPermission(self, request: pb.AuthRoleGrantPermissionRequest, call: ServerCall) -> object:
        return await self._propose(Op.ROLE_GRANT_PERMISSION, request, call)

    async def RoleRevokePermission(self, request: pb.AuthRoleRevokePermissionRequest, call: ServerCall) -> object:
        return await self._propose(Op.ROLE_REVOKE_PERMISSION, request, call)

    async def RoleGet(self, request: pb.AuthRoleGetRequest, call: ServerCall) -> pb.AuthRoleGetResponse:
        ai = await self._reader(call)
        auth = self.member.auth
        try:
            auth.check_admin(ai)
        except EtcdError:
            if not auth.has_role(ai.username if ai is not None else "", request.role):
                raise
        role = auth.roles.get(request.role)
        if role is None:
            raise RoleNotFound()
        resp = pb.AuthRoleGetResponse(perm=role.keyPermission)
        self.member.fill_header(resp.header)
        return resp

    async def RoleList(self, request: pb.AuthRoleListRequest, call: ServerCall) -> pb.AuthRoleListResponse:
        ai = await self._reader(call)
        auth = self.member.auth
        auth.check_admin(ai)
        resp = pb.AuthRoleListResponse(roles=auth.role_names())
        self.member.fill_header(resp.header)
        return resp
