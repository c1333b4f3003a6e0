"""Auth tokens, as etcd makes them: ``--auth-token simple`` (the default) or ``jwt,...``.

Simple tokens are ``<16 random letters>.<raft index>``: the member that authenticates a user
picks the letters, the index is that of the log entry carrying the authentication, and every
member registers the token when it applies the entry, so the token works on any member (one
that has not applied the entry yet waits for it). A token lives ``--auth-token-ttl`` seconds
(300 by default) after its last use; tokens are member memory only, gone on restart, and a
user's tokens go when the user is deleted or changes password, all of them when auth is
disabled. Their auth revision is always the store's current one.

JWT tokens are signed with the configured key (``pyjwt``) and carry ``username``, ``revision``
(the auth revision when issued: a token older than the store's revision is refused with
``revision of auth store is old``, so a permission change takes effect at once) and ``exp``.
Options: ``sign-method`` (HS*, RS*, PS*, ES*), ``pub-key``, ``priv-key`` (files; with only a
public key the member verifies but cannot issue), ``ttl`` (a Go duration, 5m by default).
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from kvstore.errors import StartupError, VerifyOnly

SIMPLE_TOKEN_LENGTH = 16
_LETTERS = string.ascii_lowercase + string.ascii_uppercase
DEFAULT_TTL_S = 300.0
SWEEP_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who a request comes from, and the auth revision its credentials are valid for."""

    username: str
    revision: int


class SimpleTokens:
    kind = "simple"

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s if ttl_s > 0 else DEFAULT_TTL_S
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (user, expiry)
        self._enabled = False
        self._last_sweep = 0.0

    def gen_prefix(self) -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(SIMPLE_TOKEN_LENGTH))

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False
        self._tokens.clear()

    def assign(self, username: str, revision: int, index: int, prefix: str) -> str:
        token = f"{prefix}.{index}"
        if self._enabled:
            now = self._clock()
            self._tokens[token] = (username, now + self.ttl_s)
            if now - self._last_sweep >= SWEEP_INTERVAL_S:
                self._sweep(now)
        return token

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        expired = [t for t, (_, expiry) in self._tokens.items() if expiry <= now]
        for t in expired:
            del self._tokens[t]

    @staticmethod
    def index_of(token: str) -> int | None:
        """The raft index a well-formed simple token names, None if it is not one."""
        _prefix, dot, index = token.partition(".")
        if not dot or "." in index or not index.isdigit() or len(index) > 20:
            return None
        return int(index)

    def info(self, token: str, revision: int) -> AuthInfo | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        now = self._clock()
        username, expiry = entry
        if expiry <= now:
            del self._tokens[token]
            return None
        self._tokens[token] = (username, now + self.ttl_s)
        return AuthInfo(username, revision)

    def invalidate_user(self, username: str) -> None:
        for token in [t for t, (u, _) in self._tokens.items() if u == username]:
            del self._tokens[token]

    def __len__(self) -> int:
        return len(self._tokens)


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds of a Go duration string ("5m", "1h30m", "300ms", "10s")."""
    rest = text.strip()
    if not rest:
        raise ValueError("empty duration")
    total = 0.0
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        if i == 0:
            raise ValueError(f"invalid duration {text!r}")
        number = float(rest[:i])
        rest = rest[i:]
        for unit in ("ns", "us", "µs", "ms", "s", "m", "h"):
            if rest.startswith(unit) and not (unit == "m" and rest.startswith("ms")):
                total += number * _GO_UNITS[unit]
                rest = rest[len(unit) :]
                break
        else:
            raise ValueError(f"missing or unknown unit in duration {text!r}")
    return total


class JwtTokens:
    kind = "jwt"

    def __init__(self, sign_method: str, private_key: bytes | None, public_key: bytes | None, ttl_s: float) -> None:
        self.alg = sign_method
        self.ttl_s = ttl_s
        self._sign_key: object | None = None
        self._verify_key: object
        family = sign_method[:2]
        try:
            if family == "HS":
                if not private_key:
                    raise StartupError("--auth-token jwt: sign-method HS* needs priv-key (the shared secret)")
                self._sign_key = self._verify_key = private_key
            elif family in ("RS", "PS", "ES"):
                from cryptography.hazmat.primitives import serialization

                priv = serialization.load_pem_private_key(private_key, password=None) if private_key else None
                pub = serialization.load_pem_public_key(public_key) if public_key else None
                if priv is None and pub is None:
                    raise StartupError("--auth-token jwt: missing key data (give priv-key, pub-key or both)")
                if priv is not None and pub is not None and priv.public_key().public_numbers() != pub.public_numbers():
                    raise StartupError("--auth-token jwt: public and private keys don't match")
                self._sign_key = priv
                self._verify_key = pub if pub is not None else priv.public_key()  # type: ignore[union-attr]
            else:
                raise StartupError(f"--auth-token jwt: invalid auth signature method {sign_method!r}")
        except (ValueError, TypeError) as exc:
            raise StartupError(f"--auth-token jwt: cannot load the key: {exc}") from exc

    def gen_prefix(self) -> str:
        return ""

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, username: str) -> None:
        pass

    @staticmethod
    def index_of(token: str) -> int | None:
        return None

    def assign(self, username: str, revision: int, index: int, prefix: str) -> str:
        if self._sign_key is None:
            raise VerifyOnly()  # a verify-only member cannot issue tokens (etcd answers the same)
        claims = {"username": username, "revision": revision, "exp": int(time.time() + self.ttl_s)}
        return jwt.encode(claims, self._sign_key, algorithm=self.alg)  # type: ignore[arg-type]

    @property
    def can_sign(self) -> bool:
        return self._sign_key is not None

    def info(self, token: str, revision: int) -> AuthInfo | None:
        try:
            claims = jwt.decode(token, self._verify_key, algorithms=[self.alg])  # type: ignore[arg-type]
        except jwt.PyJWTError:
            return None
        username, rev = claims.get("username"), claims.get("revision")
        if not isinstance(username, str) or not isinstance(rev, int | float) or isinstance(rev, bool):
            return None
        return AuthInfo(username, int(rev))


TokenProvider = SimpleTokens | JwtTokens

JWT_OPTIONS = ("sign-method", "pub-key", "priv-key", "ttl")


def token_provider(option: str, ttl_s: float) -> TokenProvider:
    """The provider for --auth-token (and --auth-token-ttl for simple tokens); StartupError if invalid."""
    kind, *pairs = option.split(",")
    opts: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or "=" in value or name in opts:
            raise StartupError(f"--auth-token: invalid auth options {option!r}")
        opts[name] = value
    if kind == "simple":
        if opts:
            raise StartupError(f"--auth-token: simple tokens take no options ({option!r})")
        return SimpleTokens(ttl_s)
    if kind == "jwt":
        unknown = sorted(set(opts) - set(JWT_OPTIONS))
        if unknown:
            raise StartupError(f"--auth-token: unknown JWT options {unknown} (known: {', '.join(JWT_OPTIONS)})")
        try:
            ttl = go_duration(opts["ttl"]) if opts.get("ttl") else DEFAULT_TTL_S
        except ValueError as exc:
            raise StartupError(f"--auth-token: {exc}") from exc

        def read(name: str) -> bytes | None:
            path = opts.get(name)
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise StartupError(f"--auth-token: cannot read {name} {path}: {exc}") from exc

        method = opts.get("sign-method", "")
        if method not in jwt.algorithms.get_default_algorithms() or method == "none":
            raise StartupError(f"--auth-token: invalid auth signature method {method!r}")
        return JwtTokens(method, read("priv-key"), read("pub-key"), ttl)
    raise StartupError(f"--auth-token: unknown token type {kind!r} (simple or jwt)")
