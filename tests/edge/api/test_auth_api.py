"""Sign-in, cookies, elevation, sign-out, lockout and audit over HTTP."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from edge.app import Appliance
from tests.edge.api.conftest import (
    OPERATOR_SECRET,
    SUPERVISOR_PIN,
    error_of,
    sign_in,
)


def audit_actions(appliance: Appliance) -> list[str]:
    rows = appliance.store.read().execute("SELECT action FROM audit ORDER BY id").fetchall()
    return [r[0] for r in rows]


def test_health_is_open_and_reveals_nothing(anon: TestClient) -> None:
    res = anon.get("/health")
    assert res.status_code == 200
    assert res.json() == {"status": "ok"}


def test_sign_in_sets_a_strict_httponly_cookie_and_returns_a_token(
    app: FastAPI, appliance: Appliance
) -> None:
    client = TestClient(app)
    res = client.post("/api/auth/sign-in", json={"secret": OPERATOR_SECRET})
    assert res.status_code == 200
    body = res.json()
    assert body["role"] == "operator" and len(body["token"]) >= 40
    cookie = res.headers["set-cookie"]
    assert "mp_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert res.headers["cache-control"] == "no-store"
    # The cookie alone authenticates (kiosk pages) ...
    assert client.get("/api/auth/session").json()["session_id"] == body["session_id"]
    # ... and so does the bearer token alone.
    other = TestClient(app)
    res = other.get("/api/runs", headers={"Authorization": f"Bearer {body['token']}"})
    assert res.status_code == 200
    assert "auth.sign_in" in audit_actions(appliance)


def test_wrong_secret_is_a_clear_401(anon: TestClient, appliance: Appliance) -> None:
    res = anon.post("/api/auth/sign-in", json={"secret": "guess"})
    assert res.status_code == 401
    assert error_of(res)["code"] == "invalid_credentials"
    assert "set-cookie" not in res.headers
    assert "auth.sign_in.failed" in audit_actions(appliance)


def test_lockout_after_five_failures_then_429_even_with_the_right_secret(
    app: FastAPI, appliance: Appliance
) -> None:
    attacker = TestClient(app, client=("10.1.2.3", 4000))
    codes = [
        attacker.post("/api/auth/sign-in", json={"secret": f"x{i}"}).status_code for i in range(5)
    ]
    assert codes == [401, 401, 401, 401, 429]
    res = attacker.post("/api/auth/sign-in", json={"secret": OPERATOR_SECRET})
    assert res.status_code == 429
    assert error_of(res)["code"] == "locked_out"
    assert 1 <= int(res.headers["retry-after"]) <= 61
    # Another address is not punished for it.
    bystander = TestClient(app, client=("10.1.2.4", 4000))
    assert bystander.post("/api/auth/sign-in", json={"secret": OPERATOR_SECRET}).status_code == 200
    actions = audit_actions(appliance)
    assert actions.count("auth.sign_in.failed") == 5
    assert "auth.lockout" in actions and "auth.sign_in.refused_locked" in actions


def test_lockout_grows_exponentially(app: FastAPI) -> None:
    auth = app.state.authenticator
    clock = {"now": 1000.0}
    auth.limiter._clock = lambda: clock["now"]
    attacker = TestClient(app, client=("10.9.9.9", 1))
    for _ in range(5):
        res = attacker.post("/api/auth/sign-in", json={"secret": "nope"})
    first = int(res.headers["retry-after"])
    clock["now"] += first + 1
    for _ in range(5):
        res = attacker.post("/api/auth/sign-in", json={"secret": "nope"})
    assert res.status_code == 429
    assert int(res.headers["retry-after"]) >= 2 * first - 1


def test_elevation_with_pin_and_its_lockout(app: FastAPI, appliance: Appliance) -> None:
    client = TestClient(app, client=("10.5.5.5", 1))
    sign_in(client)
    assert client.patch("/api/settings", json={"language": "th"}).status_code == 403
    res = client.post("/api/auth/elevate", json={"pin": "0000"})
    assert res.status_code == 401
    assert error_of(res)["code"] == "invalid_credentials"
    res = client.post("/api/auth/elevate", json={"pin": SUPERVISOR_PIN})
    assert res.status_code == 200 and res.json()["role"] == "supervisor"
    assert res.json()["elevated_until"] is not None
    assert client.patch("/api/settings", json={"language": "th"}).status_code == 200
    assert client.post("/api/auth/drop-elevation").json()["role"] == "operator"
    assert client.patch("/api/settings", json={"language": "en"}).status_code == 403
    codes = [client.post("/api/auth/elevate", json={"pin": "1"}).status_code for _ in range(5)]
    assert codes[-1] == 429
    assert client.post("/api/auth/elevate", json={"pin": SUPERVISOR_PIN}).status_code == 429
    actions = audit_actions(appliance)
    assert "auth.elevate" in actions and "auth.elevate.failed" in actions
    assert "settings.update" in actions
    actor = (
        appliance.store.read()
        .execute("SELECT actor FROM audit WHERE action = 'settings.update'")
        .fetchone()[0]
    )
    assert actor.startswith("supervisor:") and actor.endswith("@10.5.5.5")


def test_elevation_window_expires(app: FastAPI) -> None:
    auth = app.state.authenticator
    client = TestClient(app)
    sign_in(client, supervisor=True)
    assert client.get("/api/auth/session").json()["role"] == "supervisor"
    session = next(iter(auth._sessions.values()))
    session.elevated_until -= auth.settings.elevation_ttl_s + 1
    assert client.get("/api/auth/session").json()["role"] == "operator"
    assert client.delete("/api/calibration").status_code == 403


def test_sign_out_ends_the_session_for_cookie_and_token(app: FastAPI, appliance: Appliance) -> None:
    client = TestClient(app)
    token = sign_in(client)
    res = client.post("/api/auth/sign-out")
    assert res.status_code == 204
    assert 'mp_session=""' in res.headers["set-cookie"] or "Max-Age=0" in res.headers["set-cookie"]
    other = TestClient(app)
    assert other.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert "auth.sign_out" in audit_actions(appliance)


def test_no_secret_in_logs(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = TestClient(app)
    token = sign_in(client, supervisor=True)
    client.get(f"/api/runs?token={token}")
    client.post("/api/auth/sign-in", json={"secret": "wrong-guess-secret"})
    # Only the appliance's own loggers: the test client (httpx) logs full URLs by itself.
    text = "\n".join(
        r.getMessage() + str(r.args) for r in caplog.records if r.name.startswith("edge")
    )
    assert "/api/runs" in text  # the access log ran ...
    for secret in (OPERATOR_SECRET, SUPERVISOR_PIN, token, "wrong-guess-secret"):
        assert secret not in text  # ... and kept every secret out


def test_sign_in_body_is_validated(anon: TestClient) -> None:
    res = anon.post("/api/auth/sign-in", json={"secret": "", "extra": 1})
    assert res.status_code == 422
    assert error_of(res)["code"] == "invalid_input"
    res = anon.post(
        "/api/auth/sign-in", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert res.status_code == 422


def test_cookie_session_refuses_other_origins(app: FastAPI) -> None:
    client = TestClient(app)
    token = sign_in(client)
    evil = {"Origin": "http://evil.example"}
    res = client.post("/api/capture", json={"sample_number": "S-1"}, headers=evil)
    assert res.status_code == 403 and error_of(res)["code"] == "cross_origin"
    assert client.get("/api/runs", headers={"Origin": "http://testserver"}).status_code == 200
    # A bearer token is not ambient authority: a script holding it may call from anywhere.
    headers = {**evil, "Authorization": f"Bearer {token}"}
    assert TestClient(app).get("/api/runs", headers=headers).status_code == 200
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/api/events", headers=evil):
        pass
    with client.websocket_connect("/api/events", headers={"Origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_development_mode_generates_credentials_that_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edge.api import create_app
    from tests.edge.api.conftest import make_settings

    settings = make_settings(tmp_path, auth={})
    appliance = Appliance(settings)
    appliance.start()
    try:
        app = create_app(appliance)
        directory = app.state.generated_credentials
        assert directory == settings.data_dir / "credentials"
        secret = (directory / "operator-secret").read_text().strip()
        pin = (directory / "supervisor-pin").read_text().strip()
        client = TestClient(app)
        assert client.post("/api/auth/sign-in", json={"secret": secret}).status_code == 200
        assert client.post("/api/auth/elevate", json={"pin": pin}).status_code == 200
    finally:
        appliance.stop()


def test_production_mode_refuses_generated_or_default_credentials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edge.api import create_app
    from edge.auth import AuthConfigError
    from tests.edge.api.conftest import PIN_HASH, make_settings

    for auth in ({}, {"operator_secret": "changeme", "supervisor_pin_hash": PIN_HASH}):
        appliance = Appliance(make_settings(tmp_path, mode="production", auth=auth))
        with pytest.raises(AuthConfigError):
            create_app(appliance)
    assert not (tmp_path / "data" / "credentials").exists()


def test_an_expired_session_is_refused(app: FastAPI) -> None:
    client = TestClient(app)
    sign_in(client)
    assert client.get("/api/runs").status_code == 200
    for session in app.state.authenticator._sessions.values():
        session.expires_at -= app.state.authenticator.settings.session_ttl_s + 1
    res = client.get("/api/runs")
    assert res.status_code == 401 and error_of(res)["code"] == "unauthenticated"
