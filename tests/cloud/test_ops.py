"""Health, readiness, metrics, error handling, prestart and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.settings import CloudSettings
from tests.cloud.conftest import S3Server, make_settings, private_database
from tests.cloud.world import World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("ops"), s3_server, metrics_token=METRICS_TOKEN
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


METRICS_TOKEN = "metrics-token-for-the-ops-tests"


def test_health_ready_metrics(world: World) -> None:
    assert world.client.get("/health").json() == {"status": "ok"}
    ready = world.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "object_storage": "ok"}
    world.client.get("/api/v1/auth/me", headers=world.actors["viewer"].headers)
    metrics = world.client.get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    assert 'route="/api/v1/auth/me"' in metrics
    assert "microplate_http_request_seconds_bucket" in metrics


def test_metrics_need_the_metrics_token(world: World) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": METRICS_TOKEN},
        world.actors["admin"].headers,
    ):
        resp = world.client.get("/metrics", headers=headers)
        assert resp.status_code == 401, headers
        assert "microplate_http" not in resp.text


def test_ready_reports_a_dead_database(tmp_path: Path) -> None:
    settings = CloudSettings(
        environment="test",
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
        dev_mail_sink=tmp_path / "m",
        metrics_token=METRICS_TOKEN,
    )
    with open_client(settings) as client:
        resp = client.get("/ready")
        assert resp.status_code == 503
        assert resp.json()["checks"]["database"] == "unavailable"
        # A request that needs the database gets a clean 503, not a stack trace.
        login = client.post("/api/v1/auth/login", json={"email": "a@b.c", "password": "x"})
        assert login.status_code == 503
        assert "Traceback" not in login.text
        # Metrics still answer; the fleet part says its query failed.
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert metrics.status_code == 200
        assert "microplate_fleet_query_up 0.0" in metrics.text


def test_validation_errors_do_not_echo_secrets(world: World) -> None:
    resp = world.client.post(
        "/api/v1/users",
        json={"email": "not-an-email", "password": "hunter2-secret-value", "role": "viewer"},
        headers=world.actors["admin"].headers,
    )
    assert resp.status_code == 422
    assert "hunter2-secret-value" not in resp.text


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_CLOUD_")}
    return subprocess.run(
        [sys.executable, "-m", "cloud.cli", *args],
        cwd=ROOT,
        env={**clean, **env},
        stdin=subprocess.DEVNULL,  # no terminal, as under systemd, Ansible or CI
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ingest_without_its_broker_password_says_what_to_set() -> None:
    result = _cli(["ingest"], {"MICROPLATE_CLOUD_ENVIRONMENT": "test"})
    assert result.returncode == 2
    assert "MICROPLATE_CLOUD_MQTT_INGEST_PASSWORD" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_migrate_admin_and_provision(tmp_path: Path) -> None:
    with private_database() as url:
        env = {
            "MICROPLATE_CLOUD_DATABASE_URL": url,
            "MICROPLATE_CLOUD_ENVIRONMENT": "test",
            "MICROPLATE_CLOUD_MQTT_PASSWORD_FILE": str(tmp_path / "passwd"),
            "MICROPLATE_CLOUD_MQTT_ACL_FILE": str(tmp_path / "acl"),
            "MICROPLATE_CLOUD_FIRST_ADMIN_PASSWORD": "cli-admin-password-1",
        }
        assert _cli(["migrate"], env).returncode == 0
        made = _cli(["create-admin", "--email", "root@example.com"], env)
        assert made.returncode == 0, made.stderr
        assert "cli-admin-password-1" not in made.stdout + made.stderr
        again = _cli(["create-admin", "--email", "root@example.com"], env)
        assert again.returncode == 1 and "already exists" in again.stderr
        out = tmp_path / "bundle.json"
        prov = _cli(
            [
                "provision-device",
                "--site",
                "lab-one",
                "--site-name",
                "Lab one",
                "--device",
                "reader-7",
                "--output",
                str(out),
            ],
            env,
        )
        assert prov.returncode == 0, prov.stderr
        bundle = json.loads(out.read_text())
        assert oct(out.stat().st_mode & 0o777) == "0o600"
        assert bundle["mqtt_username"] == "lab-one.reader-7"
        assert bundle["mqtt_password"] not in prov.stdout + prov.stderr
        assert "lab-one.reader-7" in (tmp_path / "acl").read_text()
        acl = (tmp_path / "acl").read_text()
        assert "topic write microplate/v1/lab-one/reader-7/runs" in acl
        assert "topic read microplate/v1/lab-one/reader-7/acks" in acl
        bad = _cli(["provision-device", "--site", "Bad Slug!", "--device", "x1"], env)
        assert bad.returncode == 1 and "slug" in bad.stderr
        assert _cli(["migrate", "--downgrade", "--revision", "base"], env).returncode == 0


def test_cli_refuses_unknown_settings() -> None:
    result = _cli(["migrate"], {"MICROPLATE_CLOUD_DATABSE_URL": "x"})
    assert result.returncode == 2
    assert "DATABSE_URL" in result.stderr


def test_prestart_creates_the_first_admin_once(tmp_path: Path) -> None:
    from cloud.prestart import prestart

    with private_database() as url:
        settings = make_settings(
            url,
            tmp_path,
            first_admin_email="first@example.com",
            first_admin_password="first-admin-password",
        )
        prestart(settings)
        prestart(settings)  # idempotent
        with open_client(settings) as client:
            resp = client.post(
                "/api/v1/auth/login",
                json={"email": "first@example.com", "password": "first-admin-password"},
            )
            assert resp.status_code == 200
            me = client.get(
                "/api/v1/auth/me",
                headers={"Authorization": f"Bearer {resp.json()['access_token']}"},
            ).json()
            assert me["role"] == "admin"
            client.app.state.microplate.engine.dispose()  # type: ignore[attr-defined]


def test_bursts_beyond_the_pool_neither_deadlock_nor_fail(world: World, tmp_path: Path) -> None:
    """60 concurrent authenticated requests against a 2-connection pool all succeed."""
    import asyncio
    import threading

    import httpx
    import uvicorn

    from cloud.app import create_app
    from tests.cloud.conftest import free_port

    settings = world.settings.model_copy(update={"db_pool_size": 2})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            threading.Event().wait(0.05)
        headers = world.actors["viewer"].headers

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                paths = ["/api/v1/samples", "/api/v1/sites", "/api/v1/auth/me"] * 20
                resps = await asyncio.gather(*(c.get(p, headers=headers) for p in paths))
                return [r.status_code for r in resps]

        codes = asyncio.run(burst())
        assert codes == [200] * 60
    finally:
        server.should_exit = True
        thread.join(timeout=10)
