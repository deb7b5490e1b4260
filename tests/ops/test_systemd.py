"""The unit files: `systemd-analyze verify` clean, hardened below an exposure threshold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.ops.units import SYSTEMD_ANALYZE, render_units, security, unit_files, verify

pytestmark = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")

# `systemd-analyze security` exposure, 0 (locked down) .. 10 (unprotected). Servers stay at or
# below 2.0; the kiosk gets 3.0 because Chromium's own sandbox needs user namespaces and
# chroot (see the comment in its unit).
THRESHOLDS = {"microplate-kiosk.service": 3.0}
DEFAULT_THRESHOLD = 2.0
SERVICES = [u for u in unit_files() if u.suffix == ".service"]
# Units that must run as root, and why: systemctl reload needs PID 1's privileges.
ROOT_UNITS = {"microplate-mosquitto-reload.service"}


def test_expected_units_exist() -> None:
    names = {u.name for u in unit_files()}
    assert {
        "microplate-edge.service",
        "microplate-litestream.service",
        "microplate-kiosk.service",
        "microplate-cloud.service",
        "microplate-cloud-migrate.service",
        "microplate-cloud-ingest@.service",
        "microplate-cloud-ingest.target",
        "microplate-cloud-notify.service",
        "microplate-cloud-notify.timer",
        "microplate-mosquitto-reload.path",
        "microplate-mosquitto-reload.service",
    } <= names


@pytest.mark.parametrize("unit", unit_files(), ids=lambda p: p.name)
def test_verify_clean(unit: Path, tmp_path: Path) -> None:
    rendered = render_units(tmp_path, unit_files()) / unit.name
    proc = verify([rendered])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # verify also prints warnings (unknown keys, bad values) without failing: refuse those too.
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert noise == [], "\n".join(noise)


def test_verify_catches_a_missing_binary(tmp_path: Path) -> None:
    """The check above can fail: a unit whose ExecStart binary is absent is refused."""
    unit = next(u for u in unit_files() if u.name == "microplate-litestream.service")
    target = render_units(tmp_path, [unit])
    (tmp_path / "opt/microplate/bin/litestream").unlink()
    proc = verify([target / unit.name])
    assert proc.returncode != 0
    assert "litestream" in proc.stdout + proc.stderr


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_security_exposure(unit: Path, tmp_path: Path) -> None:
    rendered = render_units(tmp_path, [unit]) / unit.name
    exposure = security(rendered)
    limit = THRESHOLDS.get(unit.name, DEFAULT_THRESHOLD)
    print(f"\n{unit.name}: exposure {exposure.score} {exposure.word} (limit {limit})")
    assert exposure.score <= limit, f"{unit.name} exposure {exposure.score} > {limit}"


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_hardening_baseline(unit: Path) -> None:
    """Settings every unit must carry, whatever the score says."""
    text = unit.read_text(encoding="utf-8")
    for line in (
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), f"{unit.name}: {line}"
    if unit.name not in ROOT_UNITS:
        assert re.search(r"^User=(?!root)\w+", text, re.MULTILINE), f"{unit.name} runs as root"
    assert "RestrictAddressFamilies=" in text
    # Secrets come through LoadCredential, never through Environment=.
    for match in re.finditer(r"^Environment=(.*)$", text, re.MULTILINE):
        assert not re.search(r"(?i)password|secret|token|key", match.group(1)), match.group(0)


def test_edge_unit_is_notify_with_watchdog() -> None:
    text = (unit_files()[0].parent / "microplate-edge.service").read_text(encoding="utf-8")
    assert "Type=notify" in text
    assert re.search(r"^WatchdogSec=\d+", text, re.MULTILINE)
    assert "sdnotify" in text
    assert "DeviceAllow=char-video4linux rw" in text
    assert "DeviceAllow=/dev/nvmap rw" in text
    assert re.search(r"^SystemCallFilter=@system-service$", text, re.MULTILINE)
    assert "ExecStart=/opt/microplate/venv/bin/microplate-edge serve" in text
    for name in ("mqtt-password", "device-token", "broker-ca.pem"):  # from `microplate-edge enroll`
        assert f"LoadCredential={name}:/etc/microplate/credentials/{name}" in text


def test_no_unit_passes_a_secret_on_the_command_line() -> None:
    for unit in unit_files():
        for line in unit.read_text(encoding="utf-8").splitlines():
            if line.startswith("Exec"):
                assert not re.search(r"(?i)password|secret|token", line), f"{unit.name}: {line}"


def test_each_ingest_instance_has_its_own_stable_client_id() -> None:
    """Instances sharing one MQTT client id would take the session from each other in turn;
    a random id would leave a ghost session holding messages after every restart."""
    from cloud.cli import build_parser

    text = (unit_files()[0].parent / "microplate-cloud-ingest@.service").read_text()
    [exec_start] = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[0].endswith("microplate-cloud") and argv[1] == "ingest"
    # systemd expands a bare %i (the metrics port offset) to the instance name, a number here.
    args = build_parser().parse_args(["1" if a == "%i" else a for a in argv[1:]])
    assert args.metrics_port_offset == 1
    assert "%i" in args.client_id and "%H" in args.client_id
