"""Sign-in, JWT checks, refresh rotation and reuse, logout, password change and reset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
import pytest

from cloud.security import TokenError, create_token, decode_token
from tests.cloud.conftest import make_settings
from tests.cloud.world import PASSWORD, World, build_world, open_client

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def world(migrated_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = make_settings(
        migrated_db,
        tmp_path_factory.mktemp("auth"),
        login_max_failures=3,
        login_rate_per_minute=500,
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


def _me(world: World, token: str) -> int:
    resp = world.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    return resp.status_code


def _claims(world: World, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(world.actors["admin"].user_id),
        "typ": "access",
        "iss": world.settings.jwt_issuer,
        "aud": world.settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "x",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(world: World, claims: dict[str, object], key: str | None = None) -> str:
    return jwt.encode(
        claims, key or world.settings.jwt_secret.get_secret_value(), algorithm="HS256"
    )


def test_valid_token_is_accepted(world: World) -> None:
    assert _me(world, _sign(world, _claims(world))) == 200
    assert (
        world.client.get("/api/v1/auth/me", headers=world.actors["viewer"].headers).json()["role"]
        == "viewer"
    )


def test_alg_none_is_rejected(world: World) -> None:
    token = jwt.encode(_claims(world), key=None, algorithm="none")  # type: ignore[arg-type]
    assert _me(world, token) == 401


def test_wrong_key_is_rejected(world: World) -> None:
    assert _me(world, _sign(world, _claims(world), key="another-key-" + "x" * 40)) == 401


def test_other_hmac_algorithm_is_rejected(world: World) -> None:
    token = jwt.encode(
        _claims(world), world.settings.jwt_secret.get_secret_value(), algorithm="HS512"
    )
    assert _me(world, token) == 401


def test_wrong_audience_and_issuer_are_rejected(world: World) -> None:
    assert _me(world, _sign(world, _claims(world, aud="someone-else"))) == 401
    assert _me(world, _sign(world, _claims(world, iss="someone-else"))) == 401


def test_expired_token_is_rejected(world: World) -> None:
    past = int(time.time()) - 3600
    assert _me(world, _sign(world, _claims(world, iat=past - 60, nbf=past - 60, exp=past))) == 401


def test_missing_expiry_is_rejected(world: World) -> None:
    assert _me(world, _sign(world, _claims(world, exp=None))) == 401


def test_tampered_token_is_rejected(world: World) -> None:
    token = world.actors["viewer"].token
    header, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload)
        .replace(b'"typ"', b'"typ"')
        .replace(
            str(world.actors["viewer"].user_id).encode(),
            str(world.actors["admin"].user_id).encode(),
        )
    ).decode()
    assert forged != payload
    assert _me(world, f"{header}.{forged}.{signature}") == 401
    assert _me(world, token[:-2] + ("AA" if not token.endswith("AA") else "BB")) == 401


def test_refresh_token_is_not_an_access_token(world: World) -> None:
    pair = world.login(world.actors["viewer"].email)
    assert _me(world, pair["refresh_token"]) == 401
    # ...and an access token is not a refresh token.
    resp = world.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["access_token"]})
    assert resp.status_code == 401


def test_token_type_claim_is_checked(world: World) -> None:
    settings = world.settings
    token = create_token(
        settings,
        subject=str(world.actors["admin"].user_id),
        kind="refresh",
        expires_at=datetime.now(timezone.utc) + timedelta(minutes=5),
        family="f",
    )
    with pytest.raises(TokenError):
        decode_token(settings, token, kind="access")


def test_access_token_lifetime_is_at_most_15_minutes(world: World) -> None:
    token = world.login(world.actors["viewer"].email)["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 15 * 60


def test_refresh_rotates_and_reuse_revokes_family(world: World) -> None:
    first = world.login(world.actors["manager"].email)
    r1 = world.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r1.status_code == 200
    second = r1.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert _me(world, second["access_token"]) == 200
    # The spent token comes back (stolen copy): refused, and the family dies with it.
    reuse = world.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401
    after = world.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert after.status_code == 401
    # Other sign-ins of the same user are a different family and keep working.
    other = world.login(world.actors["manager"].email)
    ok = world.client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert ok.status_code == 200
    admin = world.actors["admin"].headers
    actions = [e["action"] for e in world.client.get("/api/v1/audit", headers=admin).json()]
    assert "auth.refresh_reuse" in actions


def test_refresh_respects_absolute_lifetime(world: World) -> None:
    from sqlalchemy import update

    from cloud.models import RefreshToken

    pair = world.login(world.actors["viewer"].email)
    claims = jwt.decode(pair["refresh_token"], options={"verify_signature": False})
    with world.sessions()() as session:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == claims["fam"])
            .values(family_expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        )
        session.commit()
    resp = world.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert resp.status_code == 401


def test_logout_revokes_the_refresh_token(world: World) -> None:
    pair = world.login(world.actors["viewer"].email)
    assert (
        world.client.post(
            "/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}
        ).status_code
        == 204
    )
    resp = world.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert resp.status_code == 401


def test_wrong_password_and_unknown_account_look_the_same(world: World) -> None:
    bad = world.client.post(
        "/api/v1/auth/login", json={"email": world.actors["viewer"].email, "password": "nope-nope"}
    )
    unknown = world.client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.test", "password": "nope-nope"}
    )
    assert bad.status_code == unknown.status_code == 401
    assert bad.json() == unknown.json()


def test_login_time_does_not_reveal_the_account(world: World) -> None:
    def timed(email: str) -> float:
        start = time.perf_counter()
        world.client.post(
            "/api/v1/auth/login", json={"email": email, "password": "wrong-password-1"}
        )
        return time.perf_counter() - start

    # Use fresh addresses each time so the lockout does not short-cut anything.
    existing = [timed(world.actors["manager_b"].email) for _ in range(2)]
    missing = [timed(f"ghost{i}@example.test") for i in range(2)]
    # Argon2 dominates both paths; without the dummy verify the miss would be ~100x faster.
    assert min(missing) > 0.3 * min(existing)


def test_lockout_after_repeated_failures(world: World) -> None:
    from cloud.crud import users
    from cloud.models import Role

    email = "lockme@example.test"
    with world.sessions()() as session:
        users.create_user(session, email=email, password=PASSWORD, role=Role.viewer)
        session.commit()
    codes = [
        world.client.post(
            "/api/v1/auth/login", json={"email": email, "password": "bad-" + str(i)}
        ).status_code
        for i in range(4)
    ]
    assert codes[:2] == [401, 401]
    assert codes[-1] == 429
    # Locked: even the right password is refused for now.
    right = world.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert right.status_code == 429
    # An unknown address locks the same way (no account enumeration through the lockout).
    ghost = [
        world.client.post(
            "/api/v1/auth/login", json={"email": "ghost-lock@example.test", "password": "x"}
        ).status_code
        for _ in range(4)
    ]
    assert ghost[-1] == 429


def test_password_change_requires_current_password_and_revokes_sessions(world: World) -> None:
    from cloud.crud import users

    email = "changer@example.test"
    with world.sessions()() as session:
        from cloud.models import Role

        users.create_user(session, email=email, password=PASSWORD, role=Role.viewer)
        session.commit()
    pair = world.login(email)
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    wrong = world.client.post(
        "/api/v1/auth/password",
        json={"current_password": "not-it-at-all", "new_password": "a-brand-new-password"},
        headers=headers,
    )
    assert wrong.status_code == 400
    time.sleep(1.05)  # token iat has one-second resolution
    ok = world.client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "a-brand-new-password"},
        headers=headers,
    )
    assert ok.status_code == 204
    assert _me(world, pair["access_token"]) == 401
    assert (
        world.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        ).status_code
        == 401
    )
    assert world.login(email, "a-brand-new-password")["access_token"]


def test_password_reset_token_is_single_use_and_never_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    email = world.actors["viewer"].email
    sink = world.settings.dev_mail_sink
    with caplog.at_level("DEBUG"):
        resp = world.client.post("/api/v1/auth/password-reset/request", json={"email": email})
        ghost = world.client.post(
            "/api/v1/auth/password-reset/request", json={"email": "no@x.test"}
        )
    assert resp.status_code == ghost.status_code == 202
    assert resp.json() == ghost.json()
    token = sink.read_text().strip().splitlines()[-1]
    assert len(token) >= 32
    assert token not in caplog.text
    new = "reset-password-12345"
    ok = world.client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": new}
    )
    assert ok.status_code == 204
    again = world.client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token, "new_password": "another-one-123"},
    )
    assert again.status_code == 400
    world.login(email, new)
    with world.sessions()() as session:
        from cloud.crud import users

        user = users.get_user_by_email(session, email=email)
        assert user is not None
        users.set_password(session, user=user, password=PASSWORD)
        session.commit()


def test_deactivated_user_is_cut_off_at_once(world: World) -> None:
    admin = world.actors["admin"].headers
    created = world.client.post(
        "/api/v1/users",
        json={
            "email": "temp@example.com",
            "password": PASSWORD,
            "role": "viewer",
            "site_ids": [str(world.site_a)],
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    pair = world.login("temp@example.com")
    assert _me(world, pair["access_token"]) == 200
    patched = world.client.patch(
        f"/api/v1/users/{created.json()['id']}", json={"is_active": False}, headers=admin
    )
    assert patched.status_code == 200
    assert _me(world, pair["access_token"]) == 401
    actions = [e["action"] for e in world.client.get("/api/v1/audit", headers=admin).json()]
    assert "user.permissions_changed" in actions


def test_last_admin_cannot_be_demoted(world: World) -> None:
    admin = world.actors["admin"]
    resp = world.client.patch(
        f"/api/v1/users/{admin.user_id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert resp.status_code == 409


def test_per_address_rate_limit(migrated_db: str, tmp_path: Path) -> None:
    settings = make_settings(migrated_db, tmp_path, login_rate_per_minute=3)
    with open_client(settings) as client:
        codes = [
            client.post(
                "/api/v1/auth/login", json={"email": f"r{i}@x.test", "password": "p"}
            ).status_code
            for i in range(5)
        ]
    assert codes[:3] == [401, 401, 401]
    assert codes[3:] == [429, 429]


def test_concurrent_failures_for_a_new_address_all_count(world: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cloud.crud import users

    def attempt(_: int) -> bool:
        with world.sessions()() as session:
            result = users.authenticate(
                session,
                email="race@example.com",
                password="nope",
                max_failures=100,
                lockout=timedelta(minutes=1),
            )
            session.commit()
            return result.locked

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(attempt, range(8)))
    from cloud.models import LoginThrottle

    with world.sessions()() as session:
        rows = session.query(LoginThrottle).all()
        counts = [r.failures for r in rows if r.failures >= 8]
    assert counts == [8]
