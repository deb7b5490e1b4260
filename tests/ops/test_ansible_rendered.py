"""What the Ansible run rendered, checked with the real tools: systemd-analyze, Mosquitto
(started on the rendered config, reached over TLS), testparm, litestream, openssl, and the
apps' own settings classes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time

import pytest

from tests.ops.conftest import find_tool, wait_port
from tests.ops.provision import (
    FAKE_CA,
    MODEL_PUBLIC_KEY,
    PIN_HASH,
    PLAYBOOK,
    SECRETS,
    Provisioned,
)
from tests.ops.units import SYSTEMD_ANALYZE, security, verify

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PLAYBOOK is None, reason="ansible-core not installed (dev extra)"),
]


def test_rendered_units_verify(provisioned: Provisioned) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze not installed")
    units = sorted(p for p in (provisioned.root / "etc/systemd/system").iterdir() if p.is_file())
    names = {u.name for u in units}
    assert {
        "microplate-edge.service",
        "microplate-cloud.service",
        "microplate-cloud-notify.timer",
        "minio.service",
    } <= names
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
    """edge.config loads edge.json; edge.auth finds the credentials where systemd puts them."""
    settings = pytest.importorskip("edge.config", reason="edge.config lands with the edge issue")
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
    # The enrollment is in the rendered config: identity, broker, and the credential files
    # (where systemd puts them) that `microplate-edge enroll` wrote from the bundle.
    assert loaded.sync is not None and loaded.sync.username == "lab1.reader-01"
    assert loaded.sync.broker_url == "mqtts://localhost:8883"
    run = "/run/credentials/microplate-edge.service"
    assert str(loaded.sync.password_file) == f"{run}/mqtt-password"
    assert str(loaded.sync.device_token_file) == f"{run}/device-token"
    creds_dir = provisioned.root / "etc/microplate/credentials"
    assert (creds_dir / "mqtt-password").read_text() == SECRETS["mqtt_device"]
    assert (creds_dir / "device-token").read_text() == SECRETS["device_token"]
    assert (creds_dir / "broker-ca.pem").read_text() == FAKE_CA
    assert loaded.detector.type == "tensorrt"
    # Model updates: the signing key Ansible wrote is where the settings say, and it loads.
    key_file = loaded.ota.public_key_file
    assert key_file == provisioned.root / "etc/microplate/model-signing.pub"
    from core.ota import load_public_key, public_key_text

    assert public_key_text(load_public_key(key_file.read_text())) == MODEL_PUBLIC_KEY
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
    from cloud.mqtt_auth import (
        BrokerAccount,
        hash_mqtt_password,
        render_acl_file,
        render_dynsec_config,
    )

    devices = [
        BrokerAccount(name, hash_mqtt_password(accounts[name]), "lab1", name)
        for name in ("reader-01", "reader-02")
    ]
    (auth / "acl").write_text(render_acl_file(devices, ingest_username="ingest"))
    # The role created an empty one (no client) so the broker starts before any device.
    assert '"clients": []' in (auth / "dynamic-security.json").read_text()
    (auth / "dynamic-security.json").write_text(render_dynsec_config(devices))
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
        # The device listener checks subscriptions (dynamic-security plugin): no `$share`.
        granted: list[list[int]] = []
        sub_done = threading.Event()

        def on_subscribe(_c, _u, _mid, reason_codes, _p):  # type: ignore[no-untyped-def]
            granted.append([rc.value for rc in reason_codes])
            sub_done.set()

        device.on_subscribe = on_subscribe
        device.subscribe("$share/g/microplate/v1/+/+/runs", qos=1)
        assert sub_done.wait(5), "no SUBACK"
        assert granted == [[0x80]], granted  # MQTT 3.1.1 "failure"
        for c in (device, ingest):
            c.disconnect()
            c.loop_stop()
    finally:
        broker.terminate()
        out, _ = broker.communicate(timeout=20)
    # Persistence: the broker saved its state where the role pointed it.
    assert (root / "var/lib/mosquitto/mosquitto.db").exists(), out
