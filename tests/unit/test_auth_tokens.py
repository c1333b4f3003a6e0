"""kvstore.auth.tokens and passwords: simple tokens' lifetime, JWT signing and refusal, option
parsing, and bcrypt checks that stay off the event loop and are bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from kvstore.auth.passwords import Passwords
from kvstore.auth.tokens import AuthInfo, JwtTokens, SimpleTokens, go_duration, token_provider
from kvstore.errors import StartupError, TooManyRequests, VerifyOnly
from tests.auth.certs import rsa_keys


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_simple_tokens_live_ttl_after_their_last_use() -> None:
    clock = Clock()
    tokens = SimpleTokens(ttl_s=10, clock=clock)
    tokens.enable()
    token = tokens.assign("u1", 5, 42, "abcdefghijklmnop")
    assert token == "abcdefghijklmnop.42" and SimpleTokens.index_of(token) == 42
    clock.now += 9
    assert tokens.info(token, 7) == AuthInfo("u1", 7)  # the store's revision, and the ttl starts over
    clock.now += 9
    assert tokens.info(token, 7) is not None
    clock.now += 10
    assert tokens.info(token, 7) is None


def test_simple_tokens_go_with_their_user_and_with_disable() -> None:
    tokens = SimpleTokens()
    tokens.enable()
    a, b = tokens.assign("u1", 1, 1, "p"), tokens.assign("u2", 1, 2, "p")
    tokens.invalidate_user("u1")
    assert tokens.info(a, 1) is None and tokens.info(b, 1) is not None
    tokens.disable()
    assert tokens.info(b, 1) is None and len(tokens) == 0
    assert tokens.assign("u1", 1, 3, "p") and tokens.info("p.3", 1) is None  # disabled: nothing registered


@pytest.mark.parametrize("token", ["", "x", "a.b", "a.1.2", "a.-1", "a." + "9" * 30])
def test_malformed_simple_tokens_name_no_index(token: str) -> None:
    assert SimpleTokens.index_of(token) is None


def test_jwt_signed_verified_and_refused(tmp_path: Path) -> None:
    priv, pub = rsa_keys(tmp_path)
    tokens = token_provider(f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=1m", 300)
    assert isinstance(tokens, JwtTokens) and tokens.ttl_s == 60
    token = tokens.assign("u1", 9, 0, "")
    assert tokens.info(token, 12) == AuthInfo("u1", 9)  # the revision it was issued at
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"username", "revision", "exp"}
    # tampered, signed by another key, another algorithm, expired, none
    head, body, sig = token.split(".")
    assert tokens.info(f"{head}.{body}.{sig[:-4]}AAAA", 12) is None
    other, _ = rsa_keys(_mkdir(tmp_path / "other"))
    assert tokens.info(jwt.encode(claims, other.read_bytes(), algorithm="RS256"), 12) is None
    assert tokens.info(jwt.encode(claims, "s" * 32, algorithm="HS256"), 12) is None
    expired = {**claims, "exp": int(time.time()) - 10}
    assert tokens.info(jwt.encode(expired, priv.read_bytes(), algorithm="RS256"), 12) is None
    assert tokens.info(jwt.encode(claims, None, algorithm="none"), 12) is None
    verify_only = token_provider(f"jwt,pub-key={pub},sign-method=RS256", 300)
    assert verify_only.info(token, 12) == AuthInfo("u1", 9) and not verify_only.can_sign  # type: ignore[union-attr]
    with pytest.raises(VerifyOnly):
        verify_only.assign("u1", 9, 0, "")


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        ("opaque", "unknown token type"),
        ("simple,ttl=5", "take no options"),
        ("jwt,sign-method=RS256", "missing key data"),
        ("jwt,sign-method=XX999,priv-key=/dev/null", "invalid auth signature method"),
        ("jwt,sign-method=RS256,priv-key=/nonexistent", "cannot read priv-key"),
        ("jwt,sign-method=RS256,bogus=1", "unknown JWT options"),
        ("jwt,sign-method=RS256,ttl=5parsecs", "unit"),
        ("jwt,sign-method", "invalid auth options"),
    ],
)
def test_bad_token_options_refused_at_start(option: str, problem: str) -> None:
    with pytest.raises(StartupError, match=problem):
        token_provider(option, 300)


def test_go_durations() -> None:
    assert [go_duration(d) for d in ("5m", "1h30m", "300ms", "1.5s")] == [300, 5400, 0.3, 1.5]
    with pytest.raises(ValueError):
        go_duration("5")


async def test_password_checks_never_stall_the_loop_and_are_bounded() -> None:
    pw = Passwords(cost=10, workers=2, max_waiting=4)
    hashed = await pw.hash("right")
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    stop = asyncio.Event()
    task = asyncio.ensure_future(ticker(stop))
    results = await asyncio.gather(*(pw.check(hashed, f"guess{i}") for i in range(12)), return_exceptions=True)
    stop.set()
    await task
    refused = [r for r in results if isinstance(r, TooManyRequests)]
    assert len(refused) == 6 and results.count(False) == 6  # 2 running + 4 waiting; the rest refused at once
    assert ticks > 100  # the loop kept turning while bcrypt worked on its threads
    assert await pw.check(hashed, "right") is True
    assert await pw.check(b"not a hash", "x") is False
    pw.close()
