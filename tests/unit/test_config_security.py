"""kvstore.config: what raftkv does not implement is refused at start (flags and ETCD_* variables),
and the TLS and auth flags are read and checked as etcd reads them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from raftkv_cmd.main import main

from kvstore import config
from kvstore.errors import StartupError


def parse(argv: list[str], environ: dict[str, str] | None = None) -> config.ServerConfig:
    parser = argparse.ArgumentParser()
    config.add_flags(parser)
    args, extra = parser.parse_known_args(argv)
    return config.from_args(args, environ=environ or {}, extra=extra)


@pytest.mark.parametrize(
    ("var", "problem"),
    [
        ("ETCD_CLIENT_CRL_FILE", "does not implement etcd's --client-crl-file"),
        ("ETCD_ENABLE_V2", "does not implement etcd's --enable-v2"),
        ("ETCD_DISCOVERY_SRV", "does not implement etcd's --discovery-srv"),
        ("ETCD_PEER_CRL_FILE", "does not implement etcd's --peer-crl-file"),
        ("ETCD_CERT_FLIE", "names no etcd flag"),
    ],
)
def test_unimplemented_etcd_variables_are_refused(var: str, problem: str) -> None:
    with pytest.raises(StartupError, match=problem):
        parse([], {var: "x"})


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--enable-v2"], "--enable-v2: etcd's flag is not implemented"),
        (["--client-crl-file=/x"], "--client-crl-file: etcd's flag is not implemented"),
        (["--no-such-flag"], "unknown flag"),
        (["stray"], "unknown flag or argument 'stray'"),
    ],
)
def test_unimplemented_flags_are_refused(argv: list[str], problem: str) -> None:
    with pytest.raises(StartupError, match=problem):
        parse(argv)


def test_the_tls_variables_that_were_dropped_are_read(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / n for n in ("c.pem", "k.pem", "ca.pem"))
    for f in (cert, key, ca):
        f.write_text("x")
    env = {
        "ETCD_CERT_FILE": str(cert),
        "ETCD_KEY_FILE": str(key),
        "ETCD_TRUSTED_CA_FILE": str(ca),
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_LISTEN_CLIENT_URLS": "https://127.0.0.1:2379",
        "ETCD_ADVERTISE_CLIENT_URLS": "https://127.0.0.1:2379",
        "ETCD_PEER_CERT_FILE": str(cert),
        "ETCD_PEER_KEY_FILE": str(key),
        "ETCD_PEER_TRUSTED_CA_FILE": str(ca),
        "ETCD_PEER_CLIENT_CERT_AUTH": "1",
        "ETCD_PEER_CERT_ALLOWED_CN": "member",
        "ETCD_LISTEN_PEER_URLS": "https://127.0.0.1:2380",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": "https://127.0.0.1:2380",
        "ETCD_AUTH_TOKEN": "simple",
        "ETCD_BCRYPT_COST": "12",
    }
    cfg = parse([], env)
    assert cfg.client_tls.cert_file == str(cert) and cfg.client_tls.client_cert_auth
    assert cfg.peer_tls.client_cert_auth and cfg.peer_tls.allowed_cn == "member"
    assert cfg.bcrypt_cost == 12


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--listen-client-urls=https://127.0.0.1:2379"], "https:// URL but no certificate"),
        (["--cert-file=/etc/hostname", "--key-file=/etc/hostname"], "http:// URL while TLS is configured"),
        (["--cert-file=/etc/hostname"], "go together"),
        (["--client-cert-auth"], "need TLS"),
        (["--bcrypt-cost=3"], "between 4 and 31"),
        (["--tls-min-version=TLS9"], None),
        (["--client-cert-auth=maybe"], "--client-cert-auth: invalid value 'maybe': strconv.ParseBool"),
        (["--peer-cert-allowed-cn=x"], "need --peer-client-cert-auth"),
    ],
)
def test_bad_security_flags_are_refused(argv: list[str], problem: str | None) -> None:
    if problem is None:  # checked when the TLS contexts are built (kvstore.tls.Protocols)
        from kvstore.tls import Protocols

        with pytest.raises(StartupError, match="TLS9"):
            Protocols(min_version="TLS9").check()
        return
    with pytest.raises(StartupError, match=problem):
        parse(argv)


def test_boolean_flags_take_gos_forms() -> None:
    for argv in (["--auto-tls"], ["--auto-tls=true"], ["-auto-tls=1"]):
        assert parse(
            [*argv, "--listen-client-urls=https://127.0.0.1:1", "--advertise-client-urls=https://127.0.0.1:1"]
        ).client_tls.auto_tls
    assert not parse(["--auto-tls=false"]).client_tls.auto_tls


def test_raftkv_serve_says_what_it_refuses(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_CLIENT_CRL_FILE", "/crl.pem")
    assert main(["serve"]) == 2
    assert (
        "ETCD_CLIENT_CRL_FILE is set, but raftkv does not implement etcd's --client-crl-file" in capsys.readouterr().err
    )


def test_the_operations_flags_are_implemented_not_refused() -> None:
    """Every flag the operations and HTTP work implemented, as flags and as ETCD_* variables."""
    argv = [
        "--listen-metrics-urls=http://127.0.0.1:2381",
        "--enable-grpc-gateway=false",
        "--strict-reconfig-check=false",
        "--experimental-corrupt-check-time=1m30s",
        "--experimental-initial-corrupt-check",
        "--quota-backend-bytes=1048576",
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=100",
    ]
    environ = {
        "ETCD_LISTEN_METRICS_URLS": "http://127.0.0.1:2381",
        "ETCD_ENABLE_GRPC_GATEWAY": "false",
        "ETCD_STRICT_RECONFIG_CHECK": "false",
        "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME": "1m30s",
        "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK": "true",
        "ETCD_QUOTA_BACKEND_BYTES": "1048576",
        "ETCD_AUTO_COMPACTION_MODE": "revision",
        "ETCD_AUTO_COMPACTION_RETENTION": "100",
    }
    for cfg in (parse(argv), parse([], environ)):
        assert cfg.listen_metrics_urls == ["http://127.0.0.1:2381"]
        assert cfg.enable_grpc_gateway is False and cfg.strict_reconfig_check is False
        assert cfg.corrupt_check_time_s == 90.0 and cfg.initial_corrupt_check is True
        assert cfg.quota_backend_bytes == 1048576
        assert (cfg.auto_compaction_mode, cfg.auto_compaction_retention) == ("revision", "100")


def test_an_https_metrics_url_needs_the_client_certificate() -> None:
    """etcd serves https:// metrics URLs with the client port's certificate; without one it is refused."""
    with pytest.raises(StartupError, match="--listen-metrics-urls has an https:// URL but no client certificate"):
        parse(["--listen-metrics-urls=https://127.0.0.1:2381"])
    cfg = parse(
        ["--listen-metrics-urls=https://127.0.0.1:2381", "--auto-tls", "--listen-client-urls=https://127.0.0.1:2379"]
    )
    assert cfg.listen_metrics_urls == ["https://127.0.0.1:2381"]
