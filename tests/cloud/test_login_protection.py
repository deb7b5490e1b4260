"""Sign-in and reset protection that cannot be bypassed or turned against users (issue 17,
point 5), against a real uvicorn (its proxy-header handling is what let X-Forwarded-For from
127.0.0.1 through) and Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from cloud.db import make_engine
from tests.cloud.conftest import make_settings
from tests.cloud.world import PASSWORD, World, build_world, open_client

pytestmark = pytest.mark.postgres


@dataclass
class Server:
    base: str
    world: World


def _serve(settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from cloud.app import create_app
    from cloud.cli import server_options
    from tests.sync.harness import serve_asgi

    app = create_app(settings, listen=False)
    with serve_asgi(app, **server_options(access_log=False)) as url:
        yield url


def _world(db: str, tmp: Path, **extra: object) -> Iterator[Server]:
    settings = make_settings(db, tmp, **extra)
    with open_client(settings) as client:
        world = build_world(settings, client)
        for base in _serve(settings):
            yield Server(base, world)


@pytest.fixture
def direct(migrated_db: str, tmp_path: Path) -> Iterator[Server]:
    """No proxy configured: X-Forwarded-For means nothing."""
    yield from _world(migrated_db, tmp_path, login_rate_per_minute=5, reset_rate_per_hour=3)


@pytest.fixture
def proxied(migrated_db: str, tmp_path: Path) -> Iterator[Server]:
    """Behind a proxy on loopback: its X-Forwarded-For names the client."""
    yield from _world(
        migrated_db,
        tmp_path,
        login_rate_per_minute=500,
        login_max_failures=3,
        lockout_minutes=10,
        trusted_proxies=["127.0.0.1/32"],
    )


def _login(base: str, email: str, password: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff else {}
    resp = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"email": email, "password": password},
        headers=headers,
        timeout=30,
    )
    return resp.status_code


def test_a_forged_forwarded_for_does_not_dodge_the_rate_limit(direct: Server) -> None:
    email = direct.world.actors["viewer"].email
    codes = [_login(direct.base, email, "wrong", xff=f"203.0.113.{i}") for i in range(8)]
    assert 429 in codes, codes


def test_failures_from_other_addresses_do_not_lock_the_owner_out(proxied: Server) -> None:
    email = proxied.world.actors["admin"].email
    for i in range(5):  # five attackers, each over the limit of 3
        codes = [_login(proxied.base, email, "wrong", xff=f"198.51.100.{i}") for _ in range(4)]
        assert codes[-1] == 429, codes
    assert _login(proxied.base, email, PASSWORD, xff="192.0.2.7") == 200


def test_a_forged_hop_left_of_the_proxy_is_ignored(proxied: Server) -> None:
    """Only the hop the trusted proxy appended counts; what the client wrote before it does not."""
    email = proxied.world.actors["viewer"].email
    codes = [
        _login(proxied.base, email, "wrong", xff=f"10.{i}.0.1, 198.51.100.77") for i in range(4)
    ]
    assert codes[-1] == 429, codes


def test_lockouts_back_off(proxied: Server) -> None:
    world = proxied.world
    email = world.actors["manager"].email
    xff = "198.51.100.200"
    codes = [_login(proxied.base, email, "wrong", xff=xff) for _ in range(3)]
    assert codes == [401, 401, 429]
    first = _locked_for(world, email, xff)
    assert timedelta(minutes=9) < first <= timedelta(minutes=10)
    _expire_locks(world)
    assert _login(proxied.base, email, "wrong", xff=xff) == 429  # locked again at once
    second = _locked_for(world, email, xff)
    assert timedelta(minutes=19) < second <= timedelta(minutes=20)


def _locked_for(world: World, email: str, ip: str) -> timedelta:
    from cloud.crud.users import _throttle_key

    engine = make_engine(world.settings)
    try:
        with engine.connect() as conn:
            until = conn.execute(
                text("SELECT locked_until FROM login_throttle WHERE email_key = :k"),
                {"k": _throttle_key(email, ip)},
            ).scalar()
    finally:
        engine.dispose()
    assert until is not None
    return until - datetime.now(timezone.utc)


def _expire_locks(world: World) -> None:
    engine = make_engine(world.settings)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE login_throttle SET locked_until = now() - interval '1 second'")
            )
    finally:
        engine.dispose()


# -- password resets -------------------------------------------------------------------------


@pytest.fixture
def world(migrated_db: str, tmp_path: Path) -> Iterator[World]:
    settings = make_settings(migrated_db, tmp_path, reset_rate_per_hour=4)
    with open_client(settings) as client:
        yield build_world(settings, client)


def _request_reset(world: World, email: str) -> int:
    resp = world.client.post("/api/v1/auth/password-reset/request", json={"email": email})
    return resp.status_code


def _tokens(world: World) -> list[str]:
    sink = world.settings.dev_mail_sink
    if not sink.exists():
        return []
    lines = sink.read_text().splitlines()
    return [line for line in lines if line and not line.startswith(("---", "Use this"))]


def _confirm(world: World, token: str, password: str) -> int:
    resp = world.client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": password}
    )
    return resp.status_code


def test_reset_tokens_die_with_a_password_change_or_another_reset(world: World) -> None:
    viewer = world.actors["viewer"]
    assert _request_reset(world, viewer.email) == 202
    assert _request_reset(world, viewer.email) == 202
    first, second = _tokens(world)[-2:]
    assert _confirm(world, second, "a-new-password-123") == 204
    assert _confirm(world, first, "another-password-456") == 400  # the other one died too

    assert _request_reset(world, viewer.email) == 202
    third = _tokens(world)[-1]
    token = world.login(viewer.email, "a-new-password-123")["access_token"]
    resp = world.client.post(
        "/api/v1/auth/password",
        json={"current_password": "a-new-password-123", "new_password": "changed-by-owner-1"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 204, resp.text
    assert _confirm(world, third, "attacker-password-1") == 400


def test_resets_are_rate_limited_and_capped_per_account(world: World) -> None:
    email = world.actors["manager"].email
    before = len(_tokens(world))
    codes = [_request_reset(world, email) for _ in range(4)]
    assert codes == [202, 202, 202, 202]
    assert len(_tokens(world)) - before == 3  # at most three live tokens an account
    assert _request_reset(world, f"nobody-{uuid.uuid4().hex[:6]}@example.test") == 429


def test_known_and_unknown_addresses_get_the_same_answer_and_the_same_work(world: World) -> None:
    engine = make_engine(world.settings)
    try:
        with engine.connect() as conn:
            n0 = conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
        known = world.client.post(
            "/api/v1/auth/password-reset/request", json={"email": world.actors["admin"].email}
        )
        ghost = world.client.post(
            "/api/v1/auth/password-reset/request", json={"email": "ghost@example.test"}
        )
        with engine.connect() as conn:
            n1 = conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
    finally:
        engine.dispose()
    assert known.status_code == ghost.status_code == 202
    assert known.json() == ghost.json()
    assert n1 - n0 == 2  # one audit row each: the same database work either way
