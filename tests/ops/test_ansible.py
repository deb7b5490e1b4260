"""The Ansible roles, run for real against a throw-away root on this machine.

`microplate_root` prefixes every path, `microplate_manage_system=false` skips packages, users
and downloads, `microplate_start_services=false` skips systemctl. What the run writes is then
checked with the real tools: systemd-analyze, Mosquitto (started on the rendered config and
connected to over TLS), testparm, litestream, and the apps' own settings classes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pwdlib import PasswordHash

from tests.ops.conftest import find_tool, free_ports, wait_port
from tests.ops.units import SYSTEMD_ANALYZE, security, verify

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = find_tool("ansible-playbook")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PLAYBOOK is None, reason="ansible-core not installed (dev extra)"),
]

# Secrets handed to the roles: none of them may appear outside the credentials directory.
SECRETS = {
    "operator": "operator-secret-4f9d2",
    "admin": "first-admin-password-7c1e",
    "minio": "minio-root-password-99ab",
    "device_s3": "dev$ice:s3'secret-31x",
    "mqtt_device": "mqtt-device-password-5e",
    "device_token": "device-api-token-81f0",
}
# A real argon2 hash of a PIN, as an admin would put in the vault (never the PIN itself).
PIN_HASH = PasswordHash.recommended().hash("246810")
FAKE_CA = "-----BEGIN CERTIFICATE-----\nMIIBdGVzdC1jYQ==\n-----END CERTIFICATE-----\n"
# Executables the skipped package/pip/download steps would have installed.
INSTALLED = ("venv/bin/microplate-edge", "venv/bin/microplate-cloud", "venv/bin/litestream",
             "venv/bin/python", "bin/minio", "bin/mc")  # fmt: skip


@dataclass
class Provisioned:
    root: Path
    inventory: Path
    env: dict[str, str]
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    lint: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    mqtt_port: int = 0
    mqtt_local_port: int = 0


def _recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s*:\s*(.*)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    base = tmp_path_factory.mktemp("ansible")
    root = base / "root"
    for rel in INSTALLED:
        exe = root / "opt/microplate" / rel
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        exe.chmod(0o755)
    bundle = base / "bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "device_id": "5b0f8a64-0000-4000-8000-000000000001",
                "site": "lab1",
                "device": "reader-01",
                "broker_url": "mqtts://localhost:8883",
                "mqtt_username": "reader-01",
                "mqtt_password": SECRETS["mqtt_device"],
                "api_base_url": "https://localhost",
                "device_token": SECRETS["device_token"],
                "ca_cert": FAKE_CA,
            }
        ),
        encoding="utf-8",
    )
    mqtt_port, mqtt_local_port = free_ports(2)
    site_vars = {
        "microplate_root": str(root),
        "microplate_manage_system": False,
        "microplate_start_services": False,
        "microplate_edge_site_id": "lab1",
        "microplate_edge_device_id": "reader-01",
        "microplate_edge_operator_secret": SECRETS["operator"],
        "microplate_edge_supervisor_pin_hash": PIN_HASH,
        "microplate_edge_enrollment_bundle": str(bundle),
        "microplate_edge_litestream_endpoint": "https://localhost:9000",
        "microplate_edge_litestream_access_key_id": "lt-lab1-reader-01",
        "microplate_edge_litestream_secret_access_key": SECRETS["device_s3"],
        "microplate_cloud_first_admin_email": "admin@lab.example.org",
        "microplate_cloud_first_admin_password": SECRETS["admin"],
        "microplate_cloud_minio_root_password": SECRETS["minio"],
        "microplate_cloud_public_host": "localhost",
        "microplate_cloud_mosquitto_user": "root" if os.geteuid() == 0 else os.environ["USER"],
        "microplate_cloud_mosquitto_port": mqtt_port,
        "microplate_cloud_mosquitto_local_port": mqtt_local_port,
        "microplate_cloud_litestream_devices": [
            {
                "site": "lab1",
                "device": "reader-01",
                "access_key": "lt-lab1-reader-01",
                "secret_key": SECRETS["device_s3"],
            }
        ],
    }
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = base / "inventory.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "vars": site_vars,
                    "children": {
                        "microplate_edge": {"hosts": {"localhost": host}},
                        "microplate_cloud": {"hosts": {"localhost": host}},
                    },
                }
            }
        ),
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOME": str(base / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_GATHER_SUBSET": "min",
    }
    state = Provisioned(root, inventory, env, mqtt_port=mqtt_port, mqtt_local_port=mqtt_local_port)
    # The linters take a while: let them run while the playbooks do.
    for name, cmd in {
        "yamllint": [str(BIN / "yamllint"), "-c", ".yamllint", "--strict", "."],
        "ansible-lint": [str(BIN / "ansible-lint"), "--offline", "--nocolor"],
    }.items():
        state.lint[name] = subprocess.Popen(
            cmd,
            cwd=ANSIBLE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        # The two playbooks touch disjoint files (shared directories get the same modes), so
        # each pass runs them side by side; the second pass must change nothing.
        for _ in range(2):
            procs = {
                playbook: subprocess.Popen(
                    [str(PLAYBOOK), "-i", str(inventory), playbook],
                    cwd=ANSIBLE_DIR,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for playbook in ("cloud.yml", "edge.yml")
            }
            for playbook, proc in procs.items():
                out, _ = proc.communicate(timeout=400)
                state.runs.append(subprocess.CompletedProcess(playbook, proc.returncode, out, ""))
            if any(run.returncode != 0 for run in state.runs):
                break
        yield state
    finally:
        for proc in state.lint.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


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
        assert _recap(run.stdout)["changed"] > 5, run.args
    for run in provisioned.runs[2:]:
        recap = _recap(run.stdout)
        changed = [line for line in run.stdout.splitlines() if line.startswith("changed:")]
        assert recap["changed"] == 0, f"{run.args} changed on the second run:\n" + "\n".join(
            changed
        )
        assert recap["failed"] == 0


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
        "litestream.yml",
        "jwt_secret",
        "first_admin_password",
        "mqtt_ingest_password",
        "s3_secret_key",
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
        if n in {"jwt_secret", "mqtt_ingest_password", "s3_secret_key", "metrics-token"}
    ]
    minio_env = root / "etc/microplate/minio.env"
    assert stat.S_IMODE(minio_env.stat().st_mode) == 0o600
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink() or creds in path.parents or path == minio_env:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for secret in [*SECRETS.values(), *generated]:
            assert secret not in text, f"a secret leaked into {path}"


def test_rendered_units_verify(provisioned: Provisioned) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze not installed")
    units = sorted(p for p in (provisioned.root / "etc/systemd/system").iterdir() if p.is_file())
    names = {u.name for u in units}
    assert {"microplate-edge.service", "microplate-cloud.service", "minio.service"} <= names
    for unit in units:
        proc = verify([unit])
        assert proc.returncode == 0, f"{unit.name}: {proc.stdout}{proc.stderr}"
    minio = security(provisioned.root / "etc/systemd/system/minio.service")
    print(f"\nminio.service (rendered): exposure {minio.score} {minio.word}")
    assert minio.score <= 2.0
    # The kiosk launcher the unit starts is the role's real script and is valid sh.
    launcher = provisioned.root / "opt/microplate/bin/microplate-kiosk"
    assert subprocess.run(["sh", "-n", str(launcher)], check=False).returncode == 0
    assert "--kiosk" in launcher.read_text()


def test_edge_configs(provisioned: Provisioned) -> None:
    root = provisioned.root
    config = json.loads((root / "etc/microplate/edge.json").read_text())
    assert config["mode"] == "production"
    assert config["site_id"] == "lab1" and config["device_id"] == "reader-01"
    assert config["share_dir"] == f"{root}/srv/microplate/share"
    assert not config["db_path"].startswith(config["share_dir"])
    share = root / "srv/microplate/share"
    assert stat.S_IMODE(share.stat().st_mode) == 0o2750
    smb = (root / "etc/samba/smb.conf").read_text()
    assert re.search(r"^\s*read only = yes$", smb, re.MULTILINE)
    assert re.search(r"^\s*guest ok = no$", smb, re.MULTILINE)
    assert f"path = {share}" in smb
    testparm = shutil.which("testparm")
    if testparm is None:
        pytest.skip("testparm (samba-common-bin) not installed: smb.conf not parsed")
    proc = subprocess.run(
        [testparm, "-s", str(root / "etc/samba/smb.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Unknown parameter" not in proc.stderr and "Ignoring" not in proc.stderr, proc.stderr
    # testparm -s prints only what differs from Samba's defaults (read only = yes is one).
    section = proc.stdout.split("[labware]", 1)[1]
    assert "valid users = labware" in section
    for bad in ("read only = No", "writeable = Yes", "guest ok = Yes", "write list = labware"):
        assert bad not in section, section
    assert "map to guest = Never" in proc.stdout or "map to guest" not in proc.stdout


def test_private_ca_is_trusted_on_both_sides(provisioned: Provisioned) -> None:
    root = provisioned.root
    # Edge: the CA from the enrollment bundle joins the OS store (Litestream is a Go program).
    assert (root / "usr/local/share/ca-certificates/microplate-cloud.crt").read_text() == FAKE_CA
    # Cloud: botocore gets the private CA through a drop-in, the committed unit stays generic.
    dropin = root / "etc/systemd/system/microplate-cloud.service.d/10-private-ca.conf"
    assert f"AWS_CA_BUNDLE={root}/etc/microplate/tls/ca.crt" in dropin.read_text()
    ca = root / "etc/microplate/tls/ca.crt"
    proc = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(root / "etc/microplate/tls/server.crt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    san = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
         str(root / "etc/microplate/tls/server.crt")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "DNS:localhost" in san and "IP Address:127.0.0.1" in san


def test_litestream_config_parses(provisioned: Provisioned) -> None:
    litestream = find_tool("litestream")
    if litestream is None:
        pytest.skip("litestream not installed")
    config = provisioned.root / "etc/microplate/credentials/litestream.yml"
    proc = subprocess.run(
        [litestream, "databases", "-no-expand-env", "-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{provisioned.root}/var/lib/microplate/microplate.db" in proc.stdout
    assert "s3" in proc.stdout


def test_edge_settings_accept_the_rendered_config(
    provisioned: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """edge.settings loads edge.json; edge.auth finds the credentials where systemd puts them."""
    settings = pytest.importorskip(
        "edge.settings", reason="edge.settings lands with the edge issue"
    )
    credentials = pytest.importorskip("edge.auth.credentials", reason="lands with the edge API")
    monkeypatch.setenv(
        "MICROPLATE_EDGE_CONFIG_FILE", str(provisioned.root / "etc/microplate/edge.json")
    )
    # systemd copies the LoadCredential= files to $CREDENTIALS_DIRECTORY under the same names.
    monkeypatch.setenv(
        "CREDENTIALS_DIRECTORY", str(provisioned.root / "etc/microplate/credentials")
    )
    loaded = settings.EdgeSettings()
    assert loaded.mode == "production" and loaded.device_id == "reader-01"
    assert loaded.detector["type"] == "tensorrt"
    creds = credentials.load_credentials(credentials.AuthConfig.from_settings(loaded))
    assert creds.operator_secret.get_secret_value() == SECRETS["operator"]
    assert creds.supervisor_pin_hash.get_secret_value() == PIN_HASH
    assert creds.metrics_token is not None and len(creds.metrics_token.get_secret_value()) == 40


def test_cloud_settings_accept_the_rendered_env(
    provisioned: Provisioned, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pytest.importorskip(
        "cloud.settings", reason="cloud.settings lands with the cloud issue"
    )
    for line in (provisioned.root / "etc/microplate/cloud.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value)
    monkeypatch.setenv(
        "CREDENTIALS_DIRECTORY", str(provisioned.root / "etc/microplate/credentials")
    )
    loaded = settings.load_settings()
    assert loaded.environment == "production"
    assert loaded.first_admin_password.get_secret_value() == SECRETS["admin"]
    assert len(loaded.jwt_secret.get_secret_value()) >= 32


@pytest.mark.mqtt
def test_mosquitto_runs_the_rendered_config(provisioned: Provisioned) -> None:
    import paho.mqtt.client as mqtt

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.path.exists(mosquitto) or not os.path.exists(passwd_tool):
        pytest.skip("mosquitto not installed")
    root = provisioned.root
    auth = root / "etc/mosquitto/microplate"
    ca = str(root / "etc/microplate/tls/ca.crt")
    # What the cloud app writes when it provisions two devices, plus its ingest account.
    accounts = {
        "reader-01": "pw-reader-01-abc",
        "reader-02": "pw-reader-02-def",
        "ingest": "pw-ingest",
    }
    (auth / "passwd").write_text("")
    for user, password in accounts.items():
        subprocess.run([passwd_tool, "-b", str(auth / "passwd"), user, password], check=True)
    (auth / "acl").write_text(
        "user reader-01\ntopic readwrite microplate/v1/lab1/reader-01/#\n\n"
        "user reader-02\ntopic readwrite microplate/v1/lab1/reader-02/#\n\n"
        "user ingest\ntopic readwrite microplate/v1/#\n"
    )
    conf = (root / "etc/mosquitto/mosquitto.conf").read_text()
    assert "max_queued_messages 100000" in conf and "persistent_client_expiration" in conf
    broker = subprocess.Popen(
        [mosquitto, "-c", str(root / "etc/mosquitto/mosquitto.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_port(provisioned.mqtt_port, 20), "broker did not listen"
        assert wait_port(provisioned.mqtt_local_port, 20)

        def client(user: str | None, port: int, tls: bool) -> tuple[mqtt.Client, int]:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{port}")
            if tls:
                c.tls_set(ca_certs=ca)
            if user:
                c.username_pw_set(user, accounts[user])
            result: dict[str, int] = {}
            done = threading.Event()

            def on_connect(_c, _u, _f, reason_code, _p):  # type: ignore[no-untyped-def]
                result["rc"] = reason_code.value
                done.set()

            c.on_connect = on_connect
            c.connect("localhost", port, keepalive=10)
            c.loop_start()
            assert done.wait(10), "no CONNACK"
            return c, result["rc"]

        anon, rc = client(None, provisioned.mqtt_port, tls=True)
        anon.loop_stop()
        assert rc != 0, "anonymous client was accepted"

        received: list[str] = []
        ingest, rc = client("ingest", provisioned.mqtt_local_port, tls=False)
        assert rc == 0
        ingest.on_message = lambda _c, _u, msg: received.append(msg.topic)
        ingest.subscribe("microplate/v1/#", qos=1)
        time.sleep(0.5)
        device, rc = client("reader-01", provisioned.mqtt_port, tls=True)
        assert rc == 0
        device.publish("microplate/v1/lab1/reader-01/runs", b"{}", qos=1).wait_for_publish(5)
        # Outside its subtree: the broker drops it (MQTT 3.1.1 has no per-publish error).
        device.publish("microplate/v1/lab1/reader-02/runs", b"{}", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert received == ["microplate/v1/lab1/reader-01/runs"]
        for c in (device, ingest):
            c.disconnect()
            c.loop_stop()
    finally:
        broker.terminate()
        out, _ = broker.communicate(timeout=20)
    # Persistence: the broker saved its state where the role pointed it.
    assert (root / "var/lib/mosquitto/mosquitto.db").exists(), out


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
