"""A member's configuration: one dataclass, read from etcd's flag names and ``ETCD_*`` variables.

A script that starts etcd can start raftkv instead: every flag below has etcd's name, meaning
and default, and ``ETCD_<FLAG>`` (upper case, ``-`` as ``_``) sets it when the flag is absent.
Flags accept both ``--flag`` and Go's ``-flag`` spelling; boolean flags take Go's forms
(``--client-cert-auth``, ``--client-cert-auth=true|false``).

What raftkv does not implement is refused at start, never ignored: an etcd flag raftkv lacks
(``ETCD_FLAGS`` lists etcd's), and every ``ETCD_*`` variable that does not name a flag below, so a
deployment moved from etcd with its environment file cannot silently lose, say, its TLS
settings and serve plaintext.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kvstore.compactor import parse_retention
from kvstore.errors import StartupError
from kvstore.godur import parse_bool, parse_duration
from kvstore.tls import TLSSettings

DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024  # etcd: 1.5 MiB
DEFAULT_QUOTA_BACKEND_BYTES = 2 << 30  # etcd: 2 GiB
GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd lets a message this much above the request limit reach it


@dataclass
class ServerConfig:
    name: str = "default"
    data_dir: Path = Path("default.etcd")
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    advertise_client_urls: list[str] = field(default_factory=lambda: ["http://localhost:2379"])
    listen_peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: ["http://localhost:2380"])
    initial_cluster: dict[str, list[str]] = field(default_factory=dict)
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100_000
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_txn_ops: int = 128
    # streams one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    # etcd's default is 2^32-1, no limit in practice; raftkv's is 1,000, so that one connection cannot
    # hold unbounded server memory (gRPC clients queue calls past the limit rather than fail them)
    max_concurrent_streams: int = 1000
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    strict_reconfig_check: bool = True
    corrupt_check_time_s: float = 0.0  # --experimental-corrupt-check-time
    initial_corrupt_check: bool = False  # --experimental-initial-corrupt-check
    # revision auto-compaction checks this often (etcd: a fixed 5 minutes); RAFTKV_REVISION_COMPACTION_INTERVAL
    revision_compaction_interval_s: float = 300.0
    log_level: str = "info"
    listen_metrics_urls: list[str] = field(default_factory=list)
    enable_grpc_gateway: bool = True
    # security (kvstore.auth, kvstore.tls)
    auth_token: str = "simple"
    auth_token_ttl: int = 300
    bcrypt_cost: int = 10
    client_tls: TLSSettings = field(default_factory=TLSSettings)
    peer_tls: TLSSettings = field(default_factory=TLSSettings)
    cipher_suites: list[str] = field(default_factory=list)
    tls_min_version: str = "TLS1.2"
    tls_max_version: str = ""
    self_signed_cert_validity: int = 1

    def __post_init__(self) -> None:
        if not self.initial_cluster:
            self.initial_cluster = {self.name: list(self.initial_advertise_peer_urls)}

    # ---- identities (as etcd derives them: stable across restarts, equal on every member) ----

    def member_id_of(self, peer_urls: Sequence[str]) -> int:
        digest = hashlib.sha1(("".join(sorted(peer_urls)) + self.initial_cluster_token).encode()).digest()
        return struct.unpack(">Q", digest[:8])[0]

    @property
    def member_id(self) -> int:
        return self.member_id_of(self.initial_cluster[self.name])

    @property
    def members(self) -> dict[int, tuple[str, list[str]]]:
        """member id -> (name, peer urls) of the initial cluster."""
        return {self.member_id_of(urls): (name, urls) for name, urls in self.initial_cluster.items()}

    @property
    def cluster_id(self) -> int:
        ids = sorted(self.members)
        digest = hashlib.sha1(b"".join(struct.pack(">Q", i) for i in ids)).digest()
        return struct.unpack(">Q", digest[:8])[0]

    @property
    def request_timeout_s(self) -> float:
        """etcd's: 5 s plus twice the election timeout."""
        return 5.0 + 2 * self.election_timeout_ms / 1000

    def client_bind_addresses(self) -> list[str]:
        return [_host_port(url, "--listen-client-urls") for url in self.listen_client_urls]

    def metrics_bind_addresses(self) -> list[str]:
        return [_host_port(url, "--listen-metrics-urls") for url in self.listen_metrics_urls]

    def peer_bind_addresses(self) -> list[str]:
        return [_host_port(url, "--listen-peer-urls") for url in self.listen_peer_urls]


def peer_address(url: str) -> str:
    """host:port of a peer URL."""
    return _host_port(url, "--initial-cluster")


def _host_port(url: str, flag: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise StartupError(f"{flag}: {url!r} is not an http:// or https://host:port URL")
    host = parts.hostname
    return f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"


def _urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def _initial_cluster(value: str) -> dict[str, list[str]]:
    cluster: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise StartupError(f"--initial-cluster: cannot parse {part!r} (want name=http://host:port,...)")
        cluster.setdefault(name, []).append(url)
    return cluster


def _bytes_size(value: str) -> int:
    return int(value)


def _duration(value: str) -> float:
    return parse_duration(value)


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


MAX_UINT32 = 2**32 - 1

# flag name -> (ServerConfig field, or "client_tls.<field>" / "peer_tls.<field>", parser)
FLAGS: dict[str, tuple[str, object]] = {
    "name": ("name", str),
    "data-dir": ("data_dir", Path),
    "listen-client-urls": ("listen_client_urls", _urls),
    "advertise-client-urls": ("advertise_client_urls", _urls),
    "listen-peer-urls": ("listen_peer_urls", _urls),
    "initial-advertise-peer-urls": ("initial_advertise_peer_urls", _urls),
    "initial-cluster": ("initial_cluster", _initial_cluster),
    "initial-cluster-state": ("initial_cluster_state", str),
    "initial-cluster-token": ("initial_cluster_token", str),
    "heartbeat-interval": ("heartbeat_interval_ms", int),
    "election-timeout": ("election_timeout_ms", int),
    "snapshot-count": ("snapshot_count", int),
    "quota-backend-bytes": ("quota_backend_bytes", _bytes_size),
    "max-request-bytes": ("max_request_bytes", _bytes_size),
    "max-txn-ops": ("max_txn_ops", int),
    "max-concurrent-streams": ("max_concurrent_streams", int),
    "auto-compaction-mode": ("auto_compaction_mode", str),
    "auto-compaction-retention": ("auto_compaction_retention", str),
    "strict-reconfig-check": ("strict_reconfig_check", parse_bool),
    "experimental-corrupt-check-time": ("corrupt_check_time_s", _duration),
    "experimental-initial-corrupt-check": ("initial_corrupt_check", parse_bool),
    "log-level": ("log_level", str),
    "listen-metrics-urls": ("listen_metrics_urls", _urls),
    "enable-grpc-gateway": ("enable_grpc_gateway", parse_bool),
    "auth-token": ("auth_token", str),
    "auth-token-ttl": ("auth_token_ttl", int),
    "bcrypt-cost": ("bcrypt_cost", int),
    "cert-file": ("client_tls.cert_file", str),
    "key-file": ("client_tls.key_file", str),
    "trusted-ca-file": ("client_tls.trusted_ca_file", str),
    "client-cert-auth": ("client_tls.client_cert_auth", parse_bool),
    "auto-tls": ("client_tls.auto_tls", parse_bool),
    "peer-cert-file": ("peer_tls.cert_file", str),
    "peer-key-file": ("peer_tls.key_file", str),
    "peer-trusted-ca-file": ("peer_tls.trusted_ca_file", str),
    "peer-client-cert-auth": ("peer_tls.client_cert_auth", parse_bool),
    "peer-auto-tls": ("peer_tls.auto_tls", parse_bool),
    "peer-cert-allowed-cn": ("peer_tls.allowed_cn", str),
    "peer-cert-allowed-hostname": ("peer_tls.allowed_hostname", str),
    "cipher-suites": ("cipher_suites", _list),
    "tls-min-version": ("tls_min_version", str),
    "tls-max-version": ("tls_max_version", str),
    "self-signed-cert-validity": ("self_signed_cert_validity", int),
}
BOOL_FLAGS = frozenset(f for f, (_, parse) in FLAGS.items() if parse is parse_bool)
REVISION_COMPACTION_INTERVAL_VAR = "RAFTKV_REVISION_COMPACTION_INTERVAL"

# every flag of etcd 3.4 and 3.5's server; those not in FLAGS are refused with a message saying so
_ETCD_FLAG_WORDS = """
    advertise-client-urls auth-token auth-token-ttl auto-compaction-mode auto-compaction-retention auto-tls
    backend-batch-interval backend-batch-limit backend-bbolt-freelist-type bcrypt-cost cert-file cipher-suites
    client-cert-allowed-hostname client-cert-auth client-crl-file config-file cors data-dir debug discovery
    discovery-fallback discovery-proxy discovery-srv discovery-srv-name election-timeout enable-grpc-gateway
    enable-log-rotation enable-pprof enable-v2 experimental-backend-bbolt-freelist-type
    experimental-compaction-batch-limit experimental-corrupt-check-time experimental-enable-distributed-tracing
    experimental-enable-lease-checkpoint experimental-enable-lease-checkpoint-persist experimental-enable-v2v3
    experimental-initial-corrupt-check experimental-peer-skip-client-san-verification
    experimental-warning-apply-duration experimental-watch-progress-notify-interval force-new-cluster
    grpc-keepalive-interval grpc-keepalive-min-time grpc-keepalive-timeout heartbeat-interval host-whitelist
    initial-advertise-peer-urls initial-cluster initial-cluster-state initial-cluster-token
    initial-election-tick-advance key-file listen-client-http-urls listen-client-urls listen-metrics-urls
    listen-peer-urls log-format log-level log-outputs log-package-levels log-rotation-config-json logger
    max-concurrent-streams max-learners max-request-bytes max-snapshots max-txn-ops max-wals metrics name
    peer-auto-tls peer-cert-allowed-cn peer-cert-allowed-hostname peer-cert-file peer-client-cert-auth
    peer-crl-file peer-key-file peer-trusted-ca-file pre-vote proxy proxy-dial-timeout proxy-failure-wait
    proxy-read-timeout proxy-refresh-interval proxy-write-timeout quota-backend-bytes self-signed-cert-validity
    snapshot-count socket-reuse-address socket-reuse-port strict-reconfig-check tls-max-version tls-min-version
    trusted-ca-file unsafe-no-fsync v2-deprecation wal-dir
"""
ETCD_FLAGS = frozenset(_ETCD_FLAG_WORDS.split())


def add_flags(parser: argparse.ArgumentParser) -> None:
    for flag in FLAGS:
        # Go's boolean flags: --flag alone means true, --flag=false turns it off
        kw: dict[str, object] = {"nargs": "?", "const": "true"} if flag in BOOL_FLAGS else {}
        parser.add_argument(f"--{flag}", f"-{flag}", dest=flag.replace("-", "_"), default=None, metavar="VALUE", **kw)


def env_name(flag: str) -> str:
    return "ETCD_" + flag.upper().replace("-", "_")


_ENV_FLAGS = {env_name(f): f for f in FLAGS}


def refuse_unknown(extra: Sequence[str], environ: Mapping[str, str]) -> None:
    """StartupError for command-line words and ETCD_* variables raftkv does not implement."""
    for word in extra:
        name = word.lstrip("-").partition("=")[0]
        if word.startswith("-") and name in ETCD_FLAGS:
            raise StartupError(f"--{name}: etcd's flag is not implemented by raftkv; remove it (it would be ignored)")
        raise StartupError(f"unknown flag or argument {word!r} (not an etcd flag raftkv implements)")
    for var in sorted(environ):
        if not var.startswith("ETCD_") or var in _ENV_FLAGS:
            continue
        flag = var[5:].lower().replace("_", "-")
        if flag in ETCD_FLAGS:
            raise StartupError(
                f"{var} is set, but raftkv does not implement etcd's --{flag}: unset it rather than have it ignored"
            )
        raise StartupError(f"{var} is set, but names no etcd flag raftkv knows (a typo?): unset it")


def from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, extra: Sequence[str] = ()
) -> ServerConfig:
    """Builds the config from parsed flags, falling back to ETCD_* variables, then etcd's defaults."""
    environ = os.environ if environ is None else environ
    refuse_unknown(extra, environ)
    values: dict[str, object] = {}
    client_tls: dict[str, object] = {}
    peer_tls: dict[str, object] = {}
    for flag, (attr, parse) in FLAGS.items():
        raw = getattr(args, flag.replace("-", "_"), None)
        if raw is None:
            raw = environ.get(env_name(flag))
        if raw is None:
            continue
        try:
            value = parse(raw)  # type: ignore[operator]
        except ValueError as exc:
            raise StartupError(f"--{flag}: invalid value {raw!r}: {exc}") from exc
        group, dot, name = attr.partition(".")
        if dot:
            (client_tls if group == "client_tls" else peer_tls)[name] = value
        else:
            values[attr] = value
    if "data_dir" not in values:
        values["data_dir"] = Path(f"{values.get('name', 'default')}.etcd")
    interval = environ.get(REVISION_COMPACTION_INTERVAL_VAR)
    if interval is not None:
        try:
            values["revision_compaction_interval_s"] = float(interval)
        except ValueError:
            raise StartupError(f"{REVISION_COMPACTION_INTERVAL_VAR}: {interval!r} is not a number of seconds") from None
    cfg = ServerConfig(**values, client_tls=TLSSettings(**client_tls), peer_tls=TLSSettings(**peer_tls))  # type: ignore[arg-type]
    _validate(cfg)
    return cfg


def _validate(cfg: ServerConfig) -> None:
    if cfg.name not in cfg.initial_cluster:
        raise StartupError(f"--initial-cluster has no member named {cfg.name!r} (the --name of this member)")
    if cfg.initial_cluster_state not in ("new", "existing"):
        raise StartupError(f"--initial-cluster-state must be new or existing, not {cfg.initial_cluster_state!r}")
    if cfg.heartbeat_interval_ms <= 0 or cfg.election_timeout_ms < 5 * cfg.heartbeat_interval_ms:
        raise StartupError("--election-timeout should be at least 5 times --heartbeat-interval")
    if cfg.max_request_bytes <= 0 or cfg.max_txn_ops <= 0:
        raise StartupError("--max-request-bytes and --max-txn-ops must be positive")
    if not 1 <= cfg.max_concurrent_streams <= MAX_UINT32:
        raise StartupError(f"--max-concurrent-streams must be between 1 and {MAX_UINT32} (etcd's flag is a uint32)")
    if cfg.quota_backend_bytes == 0:  # etcd: 0 is the default quota, a negative one disables it
        cfg.quota_backend_bytes = DEFAULT_QUOTA_BACKEND_BYTES
    try:
        retention = parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    if retention < 0:
        raise StartupError(f"--auto-compaction-retention must not be negative, got {cfg.auto_compaction_retention!r}")
    if cfg.corrupt_check_time_s < 0:
        raise StartupError("--experimental-corrupt-check-time must not be negative")
    if cfg.revision_compaction_interval_s <= 0:
        raise StartupError(f"{REVISION_COMPACTION_INTERVAL_VAR} must be positive")
    cfg.client_bind_addresses()
    cfg.peer_bind_addresses()
    cfg.metrics_bind_addresses()
    if not 4 <= cfg.bcrypt_cost <= 31:
        raise StartupError(f"--bcrypt-cost must be between 4 and 31, not {cfg.bcrypt_cost}")
    if cfg.auth_token_ttl <= 0:
        raise StartupError("--auth-token-ttl must be positive")
    if cfg.self_signed_cert_validity <= 0:
        raise StartupError("--self-signed-cert-validity must be a positive number of years")
    _validate_tls(cfg)


def _validate_tls(cfg: ServerConfig) -> None:
    for flag, urls, tls in (
        ("--listen-client-urls", cfg.listen_client_urls, cfg.client_tls),
        ("--listen-peer-urls", cfg.listen_peer_urls, cfg.peer_tls),
    ):
        prefix = "peer-" if tls is cfg.peer_tls else ""
        tls.check(prefix)
        schemes = {urlsplit(u).scheme for u in urls}
        if "https" in schemes and not tls.enabled:
            raise StartupError(
                f"{flag} has an https:// URL but no certificate: give --{prefix}cert-file and --{prefix}key-file, "
                f"or --{prefix}auto-tls"
            )
        if tls.enabled and "http" in schemes:
            raise StartupError(
                f"{flag} has an http:// URL while TLS is configured for it (--{prefix}cert-file or "
                f"--{prefix}auto-tls): use https:// URLs, plaintext beside TLS is not served"
            )
    if "https" in {urlsplit(u).scheme for u in cfg.listen_metrics_urls} and not cfg.client_tls.enabled:
        # etcd serves https:// metrics URLs with the client port's certificate
        raise StartupError(
            "--listen-metrics-urls has an https:// URL but no client certificate: give --cert-file and --key-file, "
            "or --auto-tls"
        )
    if cfg.client_tls.allowed_cn or cfg.client_tls.allowed_hostname:
        raise StartupError("allowed CN and hostname apply to peers only")
