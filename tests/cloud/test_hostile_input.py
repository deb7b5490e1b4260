"""Hostile strings at the API's edge (issue 17, point 4): NUL and other control characters are
refused with a 422 before they reach a route or Postgres (17 schemathesis failures were a NUL
reaching the database as a 500), database errors never log the statement's parameters, and a
sample number with no ASCII letter or digit still exports."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cloud.crud import results
from cloud.db import make_engine
from cloud.models import Device
from tests.cloud.conftest import make_settings
from tests.cloud.factory import run_message
from tests.cloud.world import PASSWORD, World, build_world, open_client

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def world(migrated_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("hostile"), login_rate_per_minute=1000
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


NUL_CASES = [
    ("POST", "/api/v1/auth/login", None, {"email": "a\x00@example.test", "password": "x"}),
    ("POST", "/api/v1/auth/login", None, {"email": "a@example.test", "password": "p\x00w"}),
    ("POST", "/api/v1/auth/password-reset/request", None, {"email": "x\x00@example.test"}),
    (
        "POST",
        "/api/v1/auth/password-reset/confirm",
        None,
        {"token": "t\x00", "new_password": "a-long-enough-password"},
    ),
    ("GET", "/api/v1/samples", {"q": "S\x00"}, None),
    ("GET", "/api/v1/audit", {"action": "login\x00"}, None),
    ("GET", "/api/v1/samples", {"q": "S\x1b[31m"}, None),
    (
        "POST",
        "/api/v1/users",
        None,
        {"email": "n@example.test", "password": PASSWORD, "role": "viewer", "full_name": "A\x00"},
    ),
    ("POST", "/api/v1/sites", None, {"slug": "nul-site", "name": "Lab\x00North"}),
    ("POST", "/api/v1/sites", None, {"slug": "nul-site", "name": "Lab\x07"}),
]


@pytest.mark.parametrize(("method", "path", "params", "body"), NUL_CASES)
def test_control_characters_get_a_422_not_a_500(
    world: World, method: str, path: str, params: dict[str, str] | None, body: Any
) -> None:
    resp = world.client.request(
        method, path, params=params, json=body, headers=world.actors["admin"].headers
    )
    assert resp.status_code == 422, resp.text
    assert "control character U+00" in resp.json()["detail"]


def test_a_nul_in_a_form_body_and_in_a_path_is_refused(world: World) -> None:
    resp = world.client.post(
        "/login", data={"email": "a@example.test", "password": "x\x00"}, follow_redirects=False
    )
    assert resp.status_code == 422
    resp = world.client.get("/api/v1/samples/%00", headers=world.actors["admin"].headers)
    assert resp.status_code == 422


def test_ordinary_text_still_passes(world: World) -> None:
    admin = world.actors["admin"].headers
    slug = f"lab-{uuid.uuid4().hex[:6]}"
    resp = world.client.post(
        "/api/v1/sites", json={"slug": slug, "name": "Labor Zürich 北"}, headers=admin
    )
    assert resp.status_code == 201, resp.text
    assert (
        world.client.get("/api/v1/samples", params={"q": "S-ü"}, headers=admin).status_code == 200
    )


def test_database_errors_do_not_carry_parameters(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(world.settings)
    secret = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0"
    try:
        with pytest.raises(DBAPIError) as info, engine.connect() as conn:
            # What the login once did: a NUL in one value, an argon2 hash in another.
            conn.execute(
                text("SELECT CAST(:v AS text), CAST(:h AS text)"), {"v": "a\x00", "h": secret}
            )
        logging.getLogger("test").error("db failed: %s", info.value)
    finally:
        engine.dispose()
    assert secret not in str(info.value)
    assert secret not in caplog.text


def test_a_sample_number_with_no_ascii_letter_exports(world: World) -> None:
    msg = run_message(site=world.slug_a, device="reader-1", sample_number="血清")
    with world.sessions()() as session:
        device = session.get(Device, world.device_a)
        applied = results.upsert_run(session, msg, device=device)
        session.commit()
    resp = world.client.get(
        f"/api/v1/samples/{applied.sample_id}/export.csv", headers=world.actors["admin"].headers
    )
    assert resp.status_code == 200, resp.text
    assert "血清" in resp.content.decode("utf-8")
    disposition = resp.headers["content-disposition"]
    assert f"sample-{applied.sample_id.hex[:12]}_" in disposition


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_a_number_that_is_not_finite_gets_a_422_not_a_500(world: World, number: str) -> None:
    # Failed before: Python's JSON parser takes NaN and Infinity, pydantic refused the field,
    # and FastAPI's 422 quoted the input back, which cannot be encoded as JSON: a 500.
    headers = {**world.actors["admin"].headers, "Content-Type": "application/json"}
    resp = world.client.post(
        "/api/v1/device/model/report",
        content=f'{{"assignment_id": "{uuid.uuid4()}", "agreement": {number}}}'.encode(),
        headers=headers,
    )
    assert resp.status_code == 422, resp.text
    assert "not a finite number" in resp.json()["detail"]
    ok = world.client.post("/api/v1/sites", content=b'{"slug": 1e308}', headers=headers)
    assert ok.status_code == 422 and "finite" not in ok.text  # a finite one reaches the route
