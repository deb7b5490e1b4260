"""Start-up problems a person can fix get one sentence and exit status 2, never a traceback:
an unreachable or missing database, unreachable object storage, and `create-admin` without
a terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cloud.conftest import S3Server, free_port, private_database
from tests.cloud.test_ops import _cli

pytestmark = [pytest.mark.postgres]


def _one_sentence(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, out


def test_a_missing_database_is_named(tmp_path: Path) -> None:
    env = {
        "MICROPLATE_CLOUD_ENVIRONMENT": "test",
        "MICROPLATE_CLOUD_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/mp_nope_x",
    }
    _one_sentence(_cli(["migrate"], env), "'mp_nope_x' does not exist", "createdb mp_nope_x")


def test_an_unreachable_database_server_is_named() -> None:
    port = free_port()
    env = {
        "MICROPLATE_CLOUD_ENVIRONMENT": "test",
        "MICROPLATE_CLOUD_DB_WAIT_SECONDS": "0",
        "MICROPLATE_CLOUD_DATABASE_URL": f"postgresql+psycopg://u:sekret-pw@127.0.0.1:{port}/db",
    }
    result = _cli(["serve", "--port", str(free_port())], env)
    _one_sentence(result, f"127.0.0.1:{port} cannot be reached", "start PostgreSQL")
    assert "sekret-pw" not in result.stdout + result.stderr


@pytest.mark.s3
def test_unreachable_object_storage_is_named(s3_server: S3Server) -> None:
    with private_database() as url:
        dead = f"http://127.0.0.1:{free_port()}"
        env = {
            "MICROPLATE_CLOUD_ENVIRONMENT": "test",
            "MICROPLATE_CLOUD_DATABASE_URL": url,
            "MICROPLATE_CLOUD_S3_ENDPOINT_URL": dead,
            "MICROPLATE_CLOUD_S3_ACCESS_KEY": s3_server.access_key,
            "MICROPLATE_CLOUD_S3_SECRET_KEY": s3_server.secret_key,
        }
        result = _cli(["serve", "--port", str(free_port())], env)
        _one_sentence(result, f"Object storage at {dead} cannot be reached")
        assert s3_server.secret_key not in result.stdout + result.stderr


def test_create_admin_without_a_terminal(tmp_path: Path) -> None:
    with private_database() as url:
        env = {"MICROPLATE_CLOUD_ENVIRONMENT": "test", "MICROPLATE_CLOUD_DATABASE_URL": url}
        assert _cli(["migrate"], env).returncode == 0
        # No stdin, no variable: a prompt would hang or crash; it says what to do instead.
        no_tty = _cli(["create-admin", "--email", "a@example.com"], env)
        _one_sentence(no_tty, "--password-file", "MICROPLATE_CLOUD_FIRST_ADMIN_PASSWORD")
        missing = _cli(
            ["create-admin", "--email", "a@example.com", "--password-file", "/nonexistent"], env
        )
        _one_sentence(missing, "/nonexistent")
        pw = tmp_path / "admin.pw"
        pw.write_text("from-a-file-password-1\n", encoding="utf-8")
        made = _cli(["create-admin", "--email", "a@example.com", "--password-file", str(pw)], env)
        assert made.returncode == 0, made.stderr
        assert "from-a-file-password-1" not in made.stdout + made.stderr
