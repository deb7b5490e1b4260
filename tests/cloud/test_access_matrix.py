"""Every route x every role x own/other site, generated from the app's route table.

A route without a rule here fails `test_every_route_has_a_rule`, so nobody can add an endpoint
without deciding who may call it. Kinds of rule:

- public: anyone, anonymous included, gets the route's success status;
- user: any signed-in person; anonymous and device tokens get 401;
- user_scoped: like user, but the path names a site resource: managers and viewers get 404
  for another site's (it does not exist for them), admins see every site;
- manager_scoped: manager or admin; viewers 403; managers 404 on another site;
- admin: admins only; managers and viewers 403; anonymous and devices 401;
- device: device tokens only; every user token and anonymous get 401; another device's run 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Route

from cloud.app import create_app, walk_routes
from cloud.crud import results
from cloud.models import Device
from cloud.settings import CloudSettings
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import run_message
from tests.cloud.world import PASSWORD, World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

ROLES = ("anonymous", "device", "viewer", "manager", "admin")
Body = Callable[["World", str], Any]


@dataclass(frozen=True)
class Rule:
    kind: str
    ok: int = 200
    # Builds the JSON body (or query params via `params`) for a variant: "own" or "other".
    body: Body | None = None
    params: Callable[[World, str], dict[str, Any]] | None = None
    # Path parameters that must be fresh for every call (the call destroys them).
    fresh: tuple[str, ...] = field(default_factory=tuple)


def _uniq(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _refresh_body(world: World, variant: str) -> dict[str, str]:
    return {"refresh_token": world.login(world.actors["viewer"].email)["refresh_token"]}


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/openapi.json"): Rule("public"),
    ("GET", "/docs"): Rule("public"),
    ("GET", "/docs/oauth2-redirect"): Rule("public"),
    ("GET", "/redoc"): Rule("public"),
    ("GET", "/health"): Rule("public"),
    ("GET", "/ready"): Rule("public"),
    ("GET", "/metrics"): Rule("metrics"),
    ("POST", "/api/v1/auth/login"): Rule(
        "public", body=lambda w, v: {"email": w.actors["viewer"].email, "password": PASSWORD}
    ),
    ("POST", "/api/v1/auth/refresh"): Rule("public", body=_refresh_body),
    ("POST", "/api/v1/auth/logout"): Rule("public", ok=204, body=_refresh_body),
    ("GET", "/api/v1/auth/me"): Rule("user"),
    # A wrong current password: 400 proves the caller got past authentication.
    ("POST", "/api/v1/auth/password"): Rule(
        "user", ok=400, body=lambda w, v: {"current_password": "wrong", "new_password": "x" * 16}
    ),
    ("POST", "/api/v1/auth/password-reset/request"): Rule(
        "public", ok=202, body=lambda w, v: {"email": "nobody@example.com"}
    ),
    ("POST", "/api/v1/auth/password-reset/confirm"): Rule(
        "public", ok=400, body=lambda w, v: {"token": "x" * 43, "new_password": "y" * 16}
    ),
    ("GET", "/api/v1/users"): Rule("admin"),
    ("POST", "/api/v1/users"): Rule(
        "admin",
        ok=201,
        body=lambda w, v: {
            "email": _uniq("u") + "@example.com",
            "password": PASSWORD,
            "role": "viewer",
            "site_ids": [str(w.site_a)],
        },
    ),
    ("GET", "/api/v1/users/{user_id}"): Rule("admin"),
    ("PATCH", "/api/v1/users/{user_id}"): Rule("admin", body=lambda w, v: {"full_name": "Renamed"}),
    ("GET", "/api/v1/sites"): Rule("user"),
    ("POST", "/api/v1/sites"): Rule(
        "admin", ok=201, body=lambda w, v: {"slug": _uniq("s"), "name": "New site"}
    ),
    ("GET", "/api/v1/sites/{site_id}"): Rule("user_scoped"),
    ("PATCH", "/api/v1/sites/{site_id}"): Rule("admin", body=lambda w, v: {"name": "Renamed"}),
    ("GET", "/api/v1/devices"): Rule("user"),
    ("GET", "/api/v1/devices/{device_id}"): Rule("user_scoped"),
    ("POST", "/api/v1/devices"): Rule(
        "admin",
        ok=201,
        body=lambda w, v: {
            "site_id": str(w.site_a if v == "own" else w.site_b),
            "slug": _uniq("d"),
        },
    ),
    ("POST", "/api/v1/devices/{device_id}/revoke"): Rule("admin", fresh=("device_id",)),
    ("GET", "/api/v1/device/me"): Rule("device"),
    ("POST", "/api/v1/device/images/presign"): Rule(
        "device",
        body=lambda w, v: {"run_id": str(w.extra["run"][v]), "kind": "annotated", "size_bytes": 9},
    ),
    ("GET", "/api/v1/samples"): Rule("user"),
    ("GET", "/api/v1/samples/{sample_id}"): Rule("user_scoped"),
    ("GET", "/api/v1/samples/{sample_id}/runs"): Rule("user_scoped"),
    ("GET", "/api/v1/samples/{sample_id}/export.csv"): Rule("user_scoped"),
    ("GET", "/api/v1/runs"): Rule("user"),
    ("GET", "/api/v1/runs/{run_id}"): Rule("user_scoped"),
    ("GET", "/api/v1/runs/{run_id}/image"): Rule("user_scoped"),
    ("DELETE", "/api/v1/runs/{run_id}"): Rule("manager_scoped", ok=204, fresh=("run_id",)),
    ("GET", "/api/v1/audit"): Rule("admin"),
    ("WS", "/api/v1/ws"): Rule("user"),
    # Model registry (tests/cloud/test_ota.py drives the successful paths): an unknown release,
    # assignment or report target is a 404 once the caller is let in.
    ("GET", "/api/v1/models"): Rule("admin"),
    ("GET", "/api/v1/models/rollouts"): Rule("user"),
    ("GET", "/api/v1/models/assignments"): Rule("admin"),
    ("POST", "/api/v1/models/assignments"): Rule(
        "admin",
        ok=404,
        body=lambda w, v: {
            "name": "hi-wells",
            "version": "0.0.1",
            "site_id": str(w.site_a if v == "own" else w.site_b),
            "canary": "reader-1",
        },
    ),
    ("POST", "/api/v1/models/assignments/{assignment_id}/promote"): Rule("admin", ok=404),
    ("POST", "/api/v1/models/assignments/{assignment_id}/confirm"): Rule("admin", ok=404),
    ("GET", "/api/v1/device/model"): Rule("device", ok=404),
    ("POST", "/api/v1/device/model/report"): Rule(
        "device",
        ok=404,
        body=lambda w, v: {
            "assignment_id": str(uuid.uuid4()),
            "version": "2.2.0",
            "state": "shadowing",
            "at": "2026-12-06T10:00:00Z",
        },
    ),
}


def app_routes() -> set[tuple[str, str]]:
    app = create_app(CloudSettings(environment="test"), listen=False)
    found: set[tuple[str, str]] = set()
    for route in walk_routes(app.routes):
        # Dashboard pages call this API in-process with the user's token, so these rules
        # cover them; their own access tests are tests/e2e/dashboard and tests/cloud/web.
        if getattr(route, "path", "").startswith("/ui") or getattr(route, "path", "") == "/":
            continue
        if isinstance(route, APIWebSocketRoute):
            found.add(("WS", route.path))
        elif isinstance(route, (APIRoute, Route)):
            found |= {(m, route.path) for m in (route.methods or set()) if m != "HEAD"}
    return found


def test_every_route_has_a_rule() -> None:
    routes = app_routes()
    missing = sorted(routes - set(RULES))
    stale = sorted(set(RULES) - routes)
    assert not missing, f"routes without an access rule: {missing}"
    assert not stale, f"rules for routes that no longer exist: {stale}"


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("matrix"), s3_server, login_rate_per_minute=10_000
    )
    with open_client(settings) as client:
        w = build_world(settings, client)
        w.extra["run"] = {}
        w.extra["sample"] = {}
        for variant, which, slug in (
            ("own", w.device_a, w.slug_a),
            ("other", w.device_b, w.slug_b),
        ):
            rid, sid = _seed_run(w, which, slug)
            w.extra["run"][variant] = rid
            w.extra["sample"][variant] = sid
        yield w


def _seed_run(world: World, device_id: uuid.UUID, site_slug: str) -> tuple[uuid.UUID, uuid.UUID]:
    msg = run_message(site=site_slug, device="reader-1", sample_number=_uniq("M-"))
    with world.sessions()() as session:
        device = session.get(Device, device_id)
        assert device is not None
        applied = results.upsert_run(session, msg, device=device)
        session.commit()
    assert applied.sample_id is not None
    return msg.run_id, applied.sample_id


def _fresh_device(world: World, variant: str) -> uuid.UUID:
    from cloud.crud import devices, sites
    from cloud.crud.scope import Scope

    with world.sessions()() as session:
        site_id = world.site_a if variant == "own" else world.site_b
        site = sites.get_site(session, site_id=site_id, scope=Scope.everything())
        assert site is not None
        enrollment = devices.provision_device(session, site=site, slug=_uniq("f"))
        session.commit()
        return enrollment.device.id


def _path_values(world: World, variant: str, rule: Rule) -> dict[str, str]:
    site = world.site_a if variant == "own" else world.site_b
    device = world.device_a if variant == "own" else world.device_b
    values = {
        "site_id": str(site),
        "device_id": str(device),
        "sample_id": str(world.extra["sample"][variant]),
        "run_id": str(world.extra["run"][variant]),
        # Users are not site resources; "other" is simply another account.
        "user_id": str(world.actors["viewer" if variant == "own" else "manager_b"].user_id),
        "assignment_id": str(uuid.uuid4()),
    }
    if "run_id" in rule.fresh:
        dev, slug = (
            (world.device_a, world.slug_a) if variant == "own" else (world.device_b, world.slug_b)
        )
        values["run_id"] = str(_seed_run(world, dev, slug)[0])
    if "device_id" in rule.fresh:
        values["device_id"] = str(_fresh_device(world, variant))
    return values


def expected(rule: Rule, role: str, variant: str) -> int:
    kind = rule.kind
    if kind == "public":
        return rule.ok
    if kind == "metrics":
        return 401  # the metrics token only (tests/cloud/test_ops.py), no user or device
    if kind == "device":
        if role != "device":
            return 401
        return rule.ok if variant == "own" else 404
    if role in ("anonymous", "device"):
        return 401
    if kind == "admin":
        return rule.ok if role == "admin" else 403
    if kind == "manager_scoped" and role == "viewer":
        return 403
    if kind in ("user_scoped", "manager_scoped") and variant == "other" and role != "admin":
        return 404
    return rule.ok


def _headers(world: World, role: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    if role == "device":
        return {"Authorization": f"Bearer {world.device_token_a}"}
    return world.actors[role].headers


def _ws_status(world: World, role: str) -> int:
    from starlette.websockets import WebSocketDisconnect

    token = {"anonymous": "", "device": world.device_token_a}.get(role) or (
        world.actors[role].token if role in world.actors else ""
    )
    with world.client.websocket_connect("/api/v1/ws") as ws:
        ws.send_text(token or "-")
        try:
            ws.receive_json()
        except WebSocketDisconnect as exc:
            return 401 if exc.code == 1008 else 500
    return 200


@pytest.mark.parametrize("method,path", sorted(RULES), ids=[f"{m} {p}" for m, p in sorted(RULES)])
def test_access(world: World, method: str, path: str) -> None:
    rule = RULES[(method, path)]
    variants = ("own", "other") if "{" in path or rule.body is not None else ("own",)
    if rule.kind == "device" and path.endswith("/me"):
        variants = ("own",)
    wrong: list[str] = []
    for variant in variants:
        for role in ROLES:
            want = expected(rule, role, variant)
            if method == "WS":
                got = _ws_status(world, role)
            else:
                url = path.format(**_path_values(world, variant, rule))
                kwargs: dict[str, Any] = {"headers": _headers(world, role)}
                if rule.body is not None:
                    kwargs["json"] = rule.body(world, variant)
                got = world.client.request(method, url, **kwargs).status_code
            if got != want:
                wrong.append(f"{role}/{variant}: got {got}, expected {want}")
    assert not wrong, f"{method} {path}: " + "; ".join(wrong)
