"""Every route × role, generated from the app's route table: a new route without auth fails."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute
from starlette.websockets import WebSocketDisconnect

from edge.api.deps import require_supervisor
from tests.edge.api.conftest import sign_in

# The only routes open to anyone. /health says "ok" and nothing else; sign-in is the way in.
PUBLIC = {("GET", "/health"), ("POST", "/api/auth/sign-in")}
# Operator sessions or the Prometheus metrics token.
SCRAPER = {("GET", "/ready"), ("GET", "/metrics")}
SUPERVISOR = {
    ("DELETE", "/api/runs/{run_id}"),
    ("PUT", "/api/calibration"),
    ("DELETE", "/api/calibration"),
    ("POST", "/api/calibration/proposal"),
    ("PATCH", "/api/settings"),
}
# Operators may use these on runs up to a day old; older runs need a supervisor (403
# supervisor_required for an operator), checked on a real run below.
OPERATOR_WITHIN_A_DAY = {("POST", "/api/runs/{run_id}/review")}
PARAMS = {
    "run_id": "00000000-0000-4000-8000-000000000000",
    "ticket_id": "00000000-0000-4000-8000-000000000001",
    "kind": "raw",
    "sample_number": "S-404",
}


def flat_routes(app: FastAPI) -> list[tuple[BaseRoute, str]]:
    """(route, full path) for every route, through included routers.

    FastAPI >= 0.16x keeps included routers as wrappers in ``app.routes``; older versions
    flatten them. Either way every endpoint is listed.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        return [(r, getattr(r, "path_format", "")) for r in app.routes]
    return [(c.original_route, c.path_format or "") for c in iter_route_contexts(app.routes)]


def http_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    for route, path in flat_routes(app):
        if isinstance(route, APIRoute):
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                yield method, path


def ws_routes(app: FastAPI) -> list[str]:
    return [path for route, path in flat_routes(app) if isinstance(route, APIWebSocketRoute)]


def concrete(path: str) -> str:
    path = re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], path)
    if path == "/api/capture/preview.mjpg":
        path += "?frames=1"
    return path


def uses_supervisor(route: APIRoute) -> bool:
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        if dep.call is require_supervisor:
            return True
        stack.extend(dep.dependencies)
    return False


def test_route_table_is_what_the_matrix_expects(app: FastAPI) -> None:
    routes = set(http_routes(app))
    assert len(routes) >= 25  # the matrix below must not pass because the table is empty
    assert routes >= PUBLIC | SCRAPER | SUPERVISOR
    declared = {
        (m, path)
        for r, path in flat_routes(app)
        if isinstance(r, APIRoute) and uses_supervisor(r)
        for m in r.methods
    }
    assert declared == SUPERVISOR
    assert routes >= OPERATOR_WITHIN_A_DAY and not OPERATOR_WITHIN_A_DAY & SUPERVISOR
    assert ws_routes(app) == ["/api/events"]


def test_anonymous_gets_401_everywhere_but_public(app: FastAPI, anon: TestClient) -> None:
    refused = []
    for method, path in http_routes(app):
        if (method, path) in PUBLIC:
            continue
        res = anon.request(method, concrete(path))
        if res.status_code != 401 or res.json()["error"]["code"] != "unauthenticated":
            refused.append(f"{method} {path} -> {res.status_code}")
    assert not refused, "open without credentials:\n" + "\n".join(refused)


def test_bad_and_expired_style_tokens_get_401(app: FastAPI, anon: TestClient) -> None:
    for header in ("Bearer nope", "Bearer ", "Basic b3BlcmF0b3I6eA==", "nonsense"):
        res = anon.get("/api/runs", headers={"Authorization": header})
        assert res.status_code == 401, header
    forged = TestClient(app, cookies={"mp_session": "forged"})
    assert forged.get("/api/runs").status_code == 401


def test_metrics_token_opens_only_scraper_routes(app: FastAPI, anon: TestClient) -> None:
    from tests.edge.api.conftest import METRICS_TOKEN

    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    for method, path in http_routes(app):
        res = anon.request(method, concrete(path), headers=headers)
        if (method, path) in SCRAPER | PUBLIC:
            assert res.status_code not in (401, 403), f"{method} {path}"
        else:
            assert res.status_code == 401, f"{method} {path} -> {res.status_code}"


def test_operator_gets_403_on_supervisor_routes_only(app: FastAPI) -> None:
    problems = []
    for method, path in http_routes(app):
        if (method, path) in PUBLIC:
            continue
        client = TestClient(app)  # fresh session: some routes (sign-out) end it
        sign_in(client)
        res = client.request(method, concrete(path))
        if (method, path) in SUPERVISOR:
            if res.status_code != 403 or res.json()["error"]["code"] != "supervisor_required":
                problems.append(f"{method} {path} -> {res.status_code} (want 403)")
        elif res.status_code in (401, 403):
            problems.append(f"{method} {path} -> {res.status_code} (want allowed)")
        elif res.status_code >= 500 and res.status_code not in (503, 507):
            problems.append(f"{method} {path} -> {res.status_code} (server error)")
    assert not problems, "\n".join(problems)


def test_supervisor_is_allowed_everywhere(app: FastAPI) -> None:
    problems = []
    for method, path in http_routes(app):
        client = TestClient(app)
        sign_in(client, supervisor=True)
        res = client.request(method, concrete(path))
        if res.status_code in (401, 403) and (method, path) not in PUBLIC:
            problems.append(f"{method} {path} -> {res.status_code}")
        elif res.status_code >= 500 and res.status_code not in (503, 507):
            problems.append(f"{method} {path} -> {res.status_code} (server error)")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(30)
def test_websocket_refuses_anonymous_and_accepts_sessions(app: FastAPI) -> None:
    client = TestClient(app)
    for path in ws_routes(app):
        with pytest.raises(WebSocketDisconnect) as err, client.websocket_connect(path):
            pass
        assert err.value.code == 1008
        with pytest.raises(WebSocketDisconnect), client.websocket_connect(path + "?token=forged"):
            pass
    token = sign_in(client)
    for path in ws_routes(app):
        with client.websocket_connect(f"{path}?token={token}") as ws:
            assert ws.receive_json()["type"] == "hello"


def test_routes_on_runs_older_than_a_day_need_a_supervisor(app: FastAPI) -> None:
    from datetime import datetime, timedelta, timezone

    from edge.db.store import iso
    from tests.edge.api.conftest import upload_and_wait

    appliance = app.state.appliance
    writer = TestClient(app)
    sign_in(writer)
    bodies = {("POST", "/api/runs/{run_id}/review"): {"wells": {"A1": "invalid"}}}
    assert set(bodies) == OPERATOR_WITHIN_A_DAY
    for (method, path), body in bodies.items():
        fresh = upload_and_wait(writer, "S-AGE-1", seed=101)
        old = upload_and_wait(writer, "S-AGE-2", seed=102)
        with appliance.store.write() as db:
            when = iso(datetime.now(timezone.utc) - timedelta(days=2))
            db.execute("UPDATE runs SET processed_at = ? WHERE run_id = ?", [when, old])
        anon = TestClient(app)
        assert anon.request(method, path.format(run_id=old), json=body).status_code == 401
        operator = TestClient(app)
        sign_in(operator)
        res = operator.request(method, path.format(run_id=fresh), json=body)
        assert res.status_code == 200, (path, res.text)
        res = operator.request(method, path.format(run_id=old), json=body)
        assert res.status_code == 403 and res.json()["error"]["code"] == "supervisor_required"
        supervisor = TestClient(app)
        sign_in(supervisor, supervisor=True)
        res = supervisor.request(method, path.format(run_id=old), json=body)
        assert res.status_code == 200, (path, res.text)
