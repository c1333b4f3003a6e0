"""Every error a client can see, with etcd's gRPC status code and exact message, and the one table
that maps the lower layers' own errors to them.

Clients (etcdctl, client libraries, Kubernetes) match on these strings, so they are spelled
here once and nowhere else. The server's services raise these exceptions; the log (``raft.errors``),
the store (``kvstore.mvcc.errors``) and the lessor (``kvstore.lease.errors``) raise their own,
which ``LAYER_ERRORS`` maps and ``to_etcd`` translates: at the RPC edge (``kvstore.server.rpc``),
and in the applier, whose results are etcd's answers. The gRPC layer turns them into statuses with
``code`` and ``message``.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from kvstore.lease import errors as lease_errors
from kvstore.mvcc import errors as mvcc_errors
from raft import errors as log_errors
from raft.errors import StartupError as _StartupError

_C = grpc.StatusCode


class EtcdError(Exception):
    """An error with the gRPC status etcd answers for it."""

    code: grpc.StatusCode = _C.UNKNOWN
    message: str = "etcdserver: unknown error"

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.message,))


def _error(name: str, code: grpc.StatusCode, message: str) -> type[EtcdError]:
    return type(name, (EtcdError,), {"code": code, "message": message, "__doc__": message})


# request validation
EmptyKey = _error("EmptyKey", _C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KeyNotFound = _error("KeyNotFound", _C.INVALID_ARGUMENT, "etcdserver: key not found")
ValueProvided = _error("ValueProvided", _C.INVALID_ARGUMENT, "etcdserver: value is provided")
LeaseProvided = _error("LeaseProvided", _C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TooManyOps = _error("TooManyOps", _C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DuplicateKey = _error("DuplicateKey", _C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
RequestTooLarge = _error("RequestTooLarge", _C.INVALID_ARGUMENT, "etcdserver: request is too large")


TooManyRequests = _error("TooManyRequests", _C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")

# mvcc
Compacted = _error("Compacted", _C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FutureRev = _error("FutureRev", _C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
NoSpace = _error("NoSpace", _C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

# leases
LeaseNotFound = _error("LeaseNotFound", _C.NOT_FOUND, "etcdserver: requested lease not found")
LeaseExist = _error("LeaseExist", _C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LeaseTTLTooLarge = _error("LeaseTTLTooLarge", _C.OUT_OF_RANGE, "etcdserver: too large lease TTL")

# watch
WatchCanceled = _error("WatchCanceled", _C.CANCELLED, "etcdserver: watch canceled")
# a watcher's cancel_reason (sent in WatchResponse.cancel_reason, not as a gRPC status; etcd's mvcc strings)
WATCH_EMPTY_RANGE = "mvcc: watcher range is empty"
WATCH_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
# raftkv's own: etcd has no limit on what a stream that is not read may hold back
WatchSlowConsumer = _error(
    "WatchSlowConsumer",
    _C.RESOURCE_EXHAUSTED,
    "raftkv: watch stream canceled: the client does not read its events (pending bytes over the limit)",
)

# membership
MemberExist = _error("MemberExist", _C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PeerURLExist = _error("PeerURLExist", _C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MemberNotEnoughStarted = _error(
    "MemberNotEnoughStarted",
    _C.FAILED_PRECONDITION,
    "etcdserver: re-configuration failed due to not enough started members",
)
MemberBadURLs = _error("MemberBadURLs", _C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MemberNotFound = _error("MemberNotFound", _C.NOT_FOUND, "etcdserver: member not found")
MemberNotLearner = _error("MemberNotLearner", _C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LearnerNotReady = _error(
    "LearnerNotReady",
    _C.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
TooManyLearners = _error("TooManyLearners", _C.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster")

# auth (etcd's rpctypes, same codes and strings)
RootUserNotExist = _error("RootUserNotExist", _C.FAILED_PRECONDITION, "etcdserver: root user does not exist")
RootRoleNotExist = _error("RootRoleNotExist", _C.FAILED_PRECONDITION, "etcdserver: root user does not have root role")
UserAlreadyExist = _error("UserAlreadyExist", _C.FAILED_PRECONDITION, "etcdserver: user name already exists")
UserEmpty = _error("UserEmpty", _C.INVALID_ARGUMENT, "etcdserver: user name is empty")
UserNotFound = _error("UserNotFound", _C.FAILED_PRECONDITION, "etcdserver: user name not found")
RoleAlreadyExist = _error("RoleAlreadyExist", _C.FAILED_PRECONDITION, "etcdserver: role name already exists")
RoleNotFound = _error("RoleNotFound", _C.FAILED_PRECONDITION, "etcdserver: role name not found")
RoleEmpty = _error("RoleEmpty", _C.INVALID_ARGUMENT, "etcdserver: role name is empty")
AuthFailed = _error("AuthFailed", _C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")
# not in etcd's table, so etcd answers it with code Unknown and the auth package's own words
NoPasswordUser = _error(
    "NoPasswordUser", _C.UNKNOWN, "auth: authentication failed, password was given for no password user"
)
VerifyOnly = _error("VerifyOnly", _C.UNKNOWN, "auth: token signing attempted with verify-only key")
PermissionDenied = _error("PermissionDenied", _C.PERMISSION_DENIED, "etcdserver: permission denied")
RoleNotGranted = _error("RoleNotGranted", _C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user")
PermissionNotGranted = _error(
    "PermissionNotGranted", _C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role"
)
AuthNotEnabled = _error("AuthNotEnabled", _C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
InvalidAuthToken = _error("InvalidAuthToken", _C.UNAUTHENTICATED, "etcdserver: invalid auth token")
InvalidAuthMgmt = _error("InvalidAuthMgmt", _C.INVALID_ARGUMENT, "etcdserver: invalid auth management")
AuthOldRevision = _error("AuthOldRevision", _C.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
# raftkv's own: its backend (LMDB) cannot hold a key longer than 511 bytes, and etcd has no limit
AuthNameTooLong = _error("AuthNameTooLong", _C.INVALID_ARGUMENT, "raftkv: user and role names are limited to 511 bytes")

# cluster state
NoLeader = _error("NoLeader", _C.UNAVAILABLE, "etcdserver: no leader")
NotLeader = _error("NotLeader", _C.FAILED_PRECONDITION, "etcdserver: not leader")
LeaderChanged = _error("LeaderChanged", _C.UNAVAILABLE, "etcdserver: leader changed")
Stopped = _error("Stopped", _C.UNAVAILABLE, "etcdserver: server stopped")
Timeout = _error("Timeout", _C.UNAVAILABLE, "etcdserver: request timed out")
TimeoutDueToLeaderFail = _error(
    "TimeoutDueToLeaderFail",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to previous leader failure",
)
TimeoutDueToConnectionLost = _error(
    "TimeoutDueToConnectionLost",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to connection lost",
)
TimeoutWaitAppliedIndex = _error(
    "TimeoutWaitAppliedIndex",
    _C.UNAVAILABLE,
    "etcdserver: request timed out, waiting for the applied index took too long",
)
TimeoutLeaderTransfer = _error(
    "TimeoutLeaderTransfer",
    _C.DEADLINE_EXCEEDED,
    "etcdserver: request timed out, leader transfer took too long",
)
Unhealthy = _error("Unhealthy", _C.UNAVAILABLE, "etcdserver: unhealthy cluster")
Corrupt = _error("Corrupt", _C.DATA_LOSS, "etcdserver: corrupt cluster")
NotSupportedForLearner = _error("NotSupportedForLearner", _C.UNAVAILABLE, "etcdserver: rpc not supported for learner")
BadLeaderTransferee = _error("BadLeaderTransferee", _C.FAILED_PRECONDITION, "etcdserver: bad leader transferee")


# the Lock and Election services (etcd's clientv3/concurrency errors, plain Go errors: gRPC code Unknown)
ElectionNotLeader = _error("ElectionNotLeader", _C.UNKNOWN, "election: not leader")
ElectionNoLeader = _error("ElectionNoLeader", _C.UNKNOWN, "election: no leader")
SessionExpired = _error("SessionExpired", _C.UNKNOWN, "mutex: session is expired")
MissingLeaderKey = _error("MissingLeaderKey", _C.UNKNOWN, '"leader" field must be provided')


class Relayed(EtcdError):
    """An error of a request the Lock or Election service made on its own behalf: etcd's services make
    them through an in-process client, which hands the server's error on as a plain error, so the
    caller sees its message with gRPC code Unknown (``etcdserver: requested lease not found``, ...)."""

    code = _C.UNKNOWN

    @classmethod
    def of(cls, exc: EtcdError) -> EtcdError:
        return exc if exc.code == _C.UNKNOWN else cls(exc.message)


# The lower layers' errors, as etcd answers them (etcd's togRPCError and the server's own translations).
# A class not listed is looked up by its bases (RemovedError is a StoppedError; any other LogError is
# Stopped, the log having stopped); NotPrimary and LeaseExpired never reach a client.
LAYER_ERRORS: Mapping[type[Exception], type[EtcdError]] = {
    mvcc_errors.CompactedError: Compacted,
    mvcc_errors.FutureRevError: FutureRev,
    lease_errors.LeaseNotFoundError: LeaseNotFound,
    lease_errors.LeaseExistsError: LeaseExist,
    lease_errors.LeaseTTLTooLargeError: LeaseTTLTooLarge,
    log_errors.NoLeaderError: NoLeader,
    log_errors.BusyError: TooManyRequests,
    log_errors.NotLeaderError: NotLeader,
    log_errors.BadTransfereeError: BadLeaderTransferee,
    log_errors.TransferTimeoutError: TimeoutLeaderTransfer,
    log_errors.StoppedError: Stopped,
    log_errors.LogError: Stopped,
}

ANSWERABLE: tuple[type[Exception], ...] = (
    EtcdError,
    mvcc_errors.MvccError,
    lease_errors.LeaseError,
    log_errors.LogError,
)
"""The errors that have an etcd answer (for ``except``): etcd's own and the layers' that LAYER_ERRORS maps."""


def to_etcd(exc: BaseException) -> EtcdError | None:
    """etcd's error for exc: exc itself if it is one, its LAYER_ERRORS entry (by class, then by base
    class), or None (an unexpected failure, which the edge answers as an internal error)."""
    if isinstance(exc, EtcdError):
        return exc
    for cls in type(exc).__mro__:
        etcd = LAYER_ERRORS.get(cls)
        if etcd is not None:
            return etcd()
    return None


def as_etcd(exc: Exception) -> EtcdError:
    """etcd's error for an ANSWERABLE exc (one that ``to_etcd`` maps); anything else is a bug."""
    etcd = to_etcd(exc)
    if etcd is None:
        raise TypeError(f"{type(exc).__name__} has no etcd error") from exc
    return etcd


def from_message(message: str) -> EtcdError | None:
    """The error etcd answers with this message (what a member forwarding a call gets back), or None."""
    for value in globals().values():
        if isinstance(value, type) and issubclass(value, EtcdError) and value.message == message:
            return value()
    return None


# The member cannot start safely (corrupt or torn files, bad flags): one class for the log's files
# and the store's, defined by the log layer (raft/ must not import kvstore).
StartupError = _StartupError
