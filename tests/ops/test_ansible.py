"""The Ansible roles run for real: linters, syntax, idempotence, secrets handling.

See tests/ops/provision.py for how the run is made safe on this machine.
"""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from tests.ops.provision import (
    ANSIBLE_DIR,
    PIN_HASH,
    PLAYBOOK,
    SECRETS,
    Provisioned,
    recap,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PLAYBOOK is None, reason="ansible-core not installed (dev extra)"),
]


def test_lint_clean(provisioned: Provisioned) -> None:
    for name, proc in provisioned.lint.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{out[-4000:]}"


def test_syntax_check(provisioned: Provisioned) -> None:
    for playbook in ("site.yml", "edge.yml", "cloud.yml"):
        proc = subprocess.run(
            [str(PLAYBOOK), "--syntax-check", "-i", str(provisioned.inventory), playbook],
            cwd=ANSIBLE_DIR,
            env=provisioned.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runs_twice_second_run_changes_nothing(provisioned: Provisioned) -> None:
    for run in provisioned.runs:
        assert run.returncode == 0, f"{run.args}:\n{run.stdout[-6000:]}"
    assert len(provisioned.runs) == 4
    for run in provisioned.runs[:2]:
        assert recap(run.stdout)["changed"] > 5, run.args
    for run in provisioned.runs[2:]:
        summary = recap(run.stdout)
        changed = [line for line in run.stdout.splitlines() if line.startswith("changed:")]
        assert summary["changed"] == 0, f"{run.args} changed on the second run:\n" + "\n".join(
            changed
        )
        assert summary["failed"] == 0


def test_secrets_stay_in_credentials(provisioned: Provisioned) -> None:
    root = provisioned.root
    creds = root / "etc/microplate/credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    names = {p.name for p in creds.iterdir()}
    assert {
        "operator-secret",
        "supervisor-pin-hash",
        "metrics-token",
        "enrollment.json",
        "mqtt-password",
        "device-token",
        "broker-ca.pem",
        "litestream.yml",
        "jwt_secret",
        "first_admin_password",
        "mqtt_ingest_password",
        "s3_secret_key",
        "metrics_token",
    } <= names
    for path in creds.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (creds / "operator-secret").read_text() == SECRETS["operator"]
    assert (creds / "supervisor-pin-hash").read_text() == PIN_HASH
    assert len((creds / "metrics-token").read_text()) == 40
    assert len((creds / "jwt_secret").read_text()) >= 32
    # Neither the given nor the generated secrets appear anywhere else under the root (MinIO's
    # root password sits in its own root-only environment file, which is checked separately).
    generated = [
        (creds / n).read_text()
        for n in names
        if n
        in {"jwt_secret", "mqtt_ingest_password", "s3_secret_key", "metrics-token", "metrics_token"}
    ]
    minio_env = root / "etc/microplate/minio.env"
    assert stat.S_IMODE(minio_env.stat().st_mode) == 0o600
    # Prometheus's own copy of the API metrics token (0640, group prometheus): checked in
    # test_ansible_monitoring.
    scrape_token = root / "etc/prometheus/api-metrics-token"
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink() or creds in path.parents:
            continue
        if path in (minio_env, scrape_token):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for secret in [*SECRETS.values(), *generated]:
            assert secret not in text, f"a secret leaked into {path}"


@pytest.mark.parametrize(
    ("playbook", "override", "expected"),
    [
        ("edge.yml", {"microplate_edge_operator_secret": "ChangeMe-please-1"}, "placeholder"),
        ("edge.yml", {"microplate_edge_supervisor_pin_hash": "123456"}, "argon2 hash"),
        ("cloud.yml", {"microplate_cloud_first_admin_password": ""}, "first_admin_password"),
    ],
    ids=["placeholder-secret", "plain-pin", "no-admin-password"],
)
def test_refuses_bad_secrets_without_echoing_them(
    provisioned: Provisioned, playbook: str, override: dict[str, str], expected: str
) -> None:
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", str(provisioned.inventory), playbook, "-e", json.dumps(override)],
        cwd=ANSIBLE_DIR,
        env=provisioned.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert expected in out, out[-3000:]
    for value in override.values():
        if value:
            assert value not in out, "the rejected secret was printed"
