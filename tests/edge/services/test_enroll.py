"""`microplate-edge enroll BUNDLE`: identity from the bundle, sync settings, 0600 secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge.config import EdgeSettings

ROOT = Path(__file__).resolve().parents[3]


def make_bundle(path: Path, **changes: object) -> dict[str, object]:
    now = datetime.now(timezone.utc)
    data: dict[str, object] = {
        "format": 1,
        "device_id": str(uuid.uuid4()),
        "site": "lab-1",
        "device": "reader-1",
        "broker_url": "mqtts://broker.example:8883",
        "mqtt_username": "lab-1.reader-1",
        "mqtt_password": "mqtt-secret-" + uuid.uuid4().hex,
        "api_base_url": "https://cloud.example",
        "device_token": "mpd_" + uuid.uuid4().hex,
        "ca_cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "issued_at": now.isoformat(),
        "expires_at": (now + timedelta(days=7)).isoformat(),
    }
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")
    return data


def enroll(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_EDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "--config", str(config), "enroll", *args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_enroll_writes_identity_sync_and_private_credentials(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "edge.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"data_dir": str(tmp_path / "data"), "sync": {"window": 50}}))
    bundle = make_bundle(tmp_path / "bundle.json")
    result = enroll(config, str(tmp_path / "bundle.json"))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "lab-1/reader-1" in out
    for secret in (bundle["mqtt_password"], bundle["device_token"]):
        assert secret not in out
        assert secret not in config.read_text()
    data = json.loads(config.read_text())
    assert (data["site_id"], data["device_id"]) == ("lab-1", "reader-1")
    assert data["data_dir"] == str(tmp_path / "data")  # other keys kept
    sync = data["sync"]
    assert sync["window"] == 50 and sync["username"] == "lab-1.reader-1"
    creds = config.parent / "credentials"
    assert oct(creds.stat().st_mode & 0o777) == "0o700"
    for name in ("mqtt-password", "device-token", "broker-ca.pem"):
        assert oct((creds / name).stat().st_mode & 0o777) == "0o600"
    # The appliance's own settings class reads what enroll wrote, secrets included.
    os.environ["MICROPLATE_EDGE_CONFIG_FILE"] = str(config)
    try:
        settings = EdgeSettings()
    finally:
        del os.environ["MICROPLATE_EDGE_CONFIG_FILE"]
    assert settings.sync is not None
    assert settings.sync.mqtt_password() == bundle["mqtt_password"]
    assert settings.sync.api_token() == bundle["device_token"]
    assert settings.sync.ca_cert_file == creds / "broker-ca.pem"
    # Again with the same bundle: nothing changes.
    again = enroll(config, str(tmp_path / "bundle.json"))
    assert again.returncode == 0 and "Nothing changed" in again.stdout


def test_systemd_credentials_path(tmp_path: Path) -> None:
    config = tmp_path / "edge.json"
    make_bundle(tmp_path / "b.json", ca_cert=None)
    run = "/run/credentials/microplate-edge.service"
    result = enroll(
        config, str(tmp_path / "b.json"), "--credentials-dir", str(tmp_path / "c"),
        "--credentials-path", run,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sync = json.loads(config.read_text())["sync"]
    assert sync["password_file"] == f"{run}/mqtt-password"
    assert sync["device_token_file"] == f"{run}/device-token"
    assert "ca_cert_file" not in sync
    assert (tmp_path / "c" / "mqtt-password").is_file()
    assert (tmp_path / "c" / "broker-ca.pem").read_text() == ""  # always there for systemd


def test_base_settings_from_an_installer(tmp_path: Path) -> None:
    base, config = tmp_path / "edge.base.json", tmp_path / "edge.json"
    base.write_text(json.dumps({"site_id": "lab-1", "device_id": "reader-1", "mode": "production"}))
    make_bundle(tmp_path / "b.json")
    first = enroll(config, str(tmp_path / "b.json"), "--base", str(base))
    assert first.returncode == 0, first.stderr
    assert json.loads(config.read_text())["mode"] == "production"
    assert json.loads(base.read_text()) == {
        "site_id": "lab-1", "device_id": "reader-1", "mode": "production"
    }  # fmt: skip
    again = enroll(config, str(tmp_path / "b.json"), "--base", str(base))
    assert "Nothing changed" in again.stdout


def test_a_bundle_for_another_site_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "edge.json"
    config.write_text(json.dumps({"site_id": "lab-2", "device_id": "reader-1"}))
    make_bundle(tmp_path / "b.json")
    result = enroll(config, str(tmp_path / "b.json"))
    assert result.returncode == 1
    assert "for site 'lab-1'" in result.stderr and "belongs to site 'lab-2'" in result.stderr
    assert json.loads(config.read_text()) == {"site_id": "lab-2", "device_id": "reader-1"}
    assert not (tmp_path / "credentials").exists()
    moved = enroll(config, str(tmp_path / "b.json"), "--site", "lab-1")
    assert moved.returncode == 0, moved.stderr
    assert "identity changed from lab-2/reader-1" in moved.stdout


def test_an_expired_bundle_is_refused_unless_already_taken(tmp_path: Path) -> None:
    config = tmp_path / "edge.json"
    old = datetime.now(timezone.utc) - timedelta(days=10)
    data = make_bundle(
        tmp_path / "b.json",
        issued_at=old.isoformat(),
        expires_at=(old + timedelta(days=7)).isoformat(),
    )
    result = enroll(config, str(tmp_path / "b.json"))
    assert result.returncode == 1 and "expired" in result.stderr
    assert "Traceback" not in result.stderr
    assert not config.exists()
    # Enrolled with it while it was valid (its secrets are in place): re-running is fine.
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, key in (("mqtt-password", "mqtt_password"), ("device-token", "device_token"),
                      ("broker-ca.pem", "ca_cert")):  # fmt: skip
        (creds / name).write_text(str(data[key]))
    assert enroll(config, str(tmp_path / "b.json")).returncode == 0


def test_damaged_bundles_say_what_is_wrong(tmp_path: Path) -> None:
    config = tmp_path / "edge.json"
    (tmp_path / "junk.json").write_text("{not json")
    junk = enroll(config, str(tmp_path / "junk.json"))
    assert junk.returncode == 1 and "not an enrollment bundle" in junk.stderr
    data = make_bundle(tmp_path / "edited.json", device="reader-2")
    edited = enroll(config, str(tmp_path / "edited.json"))
    assert edited.returncode == 1 and "mqtt_username" in edited.stderr
    assert str(data["mqtt_password"]) not in edited.stderr
    missing = enroll(config, str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "cannot be read" in missing.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_EDGE_")}
    no_config = subprocess.run(
        [sys.executable, "-m", "edge.cli", "enroll", str(tmp_path / "edited.json")],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_config.returncode == 1 and "--config" in no_config.stderr
    assert not config.exists()
