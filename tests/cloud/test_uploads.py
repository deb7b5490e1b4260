"""Uploaded images and response headers (issue 17, point 7): the dashboard's image route
streams only JPEGs with nosniff and a sandboxing CSP; every answer carries nosniff, and HSTS
when it went over TLS. (Signed size and type of presigned PUTs: tests/cloud/test_devices.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.crud import results
from cloud.models import Device
from cloud.web.session import ACCESS_COOKIE
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import run_message
from tests.cloud.world import World, build_world, open_client

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(migrated_db, tmp_path_factory.mktemp("uploads"), s3_server)
    with open_client(settings) as client:
        world = build_world(settings, client)
        world.client.app.state.microplate.store.ensure_bucket()  # type: ignore[attr-defined]
        yield world


def _run_with_image(world: World, data: bytes, content_type: str) -> uuid.UUID:
    msg = run_message(site=world.slug_a, device="reader-1", sample_number="S-IMG")
    with world.sessions()() as session:
        device = session.get(Device, world.device_a)
        results.upsert_run(session, msg, device=device)
        session.commit()
    store = world.client.app.state.microplate.store  # type: ignore[attr-defined]
    store.put(
        f"{world.slug_a}/reader-1/{msg.run_id}/annotated.jpg", data, content_type=content_type
    )
    return msg.run_id


def _dashboard_get(world: World, path: str):  # type: ignore[no-untyped-def]
    world.client.cookies.set(ACCESS_COOKIE, world.actors["viewer"].token)
    try:
        return world.client.get(path)
    finally:
        world.client.cookies.clear()


def test_the_image_route_streams_a_jpeg_with_safe_headers(world: World) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 1000
    run_id = _run_with_image(world, jpeg, "image/jpeg")
    resp = _dashboard_get(world, f"/ui/runs/{run_id}/image.jpg")
    assert resp.status_code == 200, resp.text[:300]
    assert resp.content == jpeg
    assert resp.headers["content-type"] == "image/jpeg"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in resp.headers["content-security-policy"]


def test_html_posing_as_the_image_is_not_served(world: World) -> None:
    run_id = _run_with_image(world, b"<html><script>alert(1)</script></html>", "text/html")
    resp = _dashboard_get(world, f"/ui/runs/{run_id}/image.jpg")
    assert resp.status_code == 404
    assert b"<script>" not in resp.content


def test_every_answer_says_nosniff_and_hsts_only_over_tls(world: World) -> None:
    plain = world.client.get("/health")
    assert plain.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in plain.headers
    api = world.client.get("/api/v1/auth/me", headers=world.actors["viewer"].headers)
    assert api.headers["x-content-type-options"] == "nosniff"
    with TestClient(create_app(world.settings, listen=False), base_url="https://testserver") as tls:
        assert "max-age=" in tls.get("/health").headers["strict-transport-security"]


def test_hsts_through_a_trusted_proxy_only(world: World) -> None:
    settings = make_settings(
        world.settings.database_url,
        world.settings.dev_mail_sink.parent,
        trusted_proxies=["127.0.0.1/32"],
    )
    app = create_app(settings, listen=False)
    with TestClient(app, client=("127.0.0.1", 5000)) as proxied:
        resp = proxied.get("/health", headers={"X-Forwarded-Proto": "https"})
        assert "strict-transport-security" in resp.headers
    with TestClient(app, client=("203.0.113.9", 5000)) as direct:
        resp = direct.get("/health", headers={"X-Forwarded-Proto": "https"})
        assert "strict-transport-security" not in resp.headers
