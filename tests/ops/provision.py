"""Run the Ansible roles for real against a throw-away root (shared by the test_ansible* files).

`microplate_root` prefixes every path, `microplate_manage_system=false` skips packages, users
and downloads, `microplate_start_services=false` skips systemctl. The linters run alongside.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pwdlib import PasswordHash

from tests.ops.conftest import find_tool, free_ports

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = find_tool("ansible-playbook")
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
# base64 of 32 bytes, the shape `microplate-cloud models keygen` prints (a public key: no secret)
MODEL_PUBLIC_KEY = "0eM5SZMJ3JXtV/UsZoq/7jmO/JTh4bZeBO/CWnHnMac="
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


def recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s*:\s*(.*)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def provision(base: Path) -> Iterator[Provisioned]:
    """Render a throw-away root with the roles: lint in the background, two passes."""
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
                "mqtt_username": "lab1.reader-01",
                "mqtt_password": SECRETS["mqtt_device"],
                "api_base_url": "https://localhost",
                "device_token": SECRETS["device_token"],
                "ca_cert": FAKE_CA,
            }
        ),
        encoding="utf-8",
    )
    # The role runs the appliance's real `enroll` (the venv above holds only stubs).
    edge_cli = base / "microplate-edge"
    edge_cli.write_text(
        f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m edge.cli "$@"\n',
        encoding="utf-8",
    )
    edge_cli.chmod(0o755)
    mqtt_port, mqtt_local_port = free_ports(2)
    site_vars = {
        "microplate_root": str(root),
        "microplate_manage_system": False,
        "microplate_start_services": False,
        "microplate_edge_site_id": "lab1",
        "microplate_edge_device_id": "reader-01",
        "microplate_edge_model_public_key": MODEL_PUBLIC_KEY,
        "microplate_edge_operator_secret": SECRETS["operator"],
        "microplate_edge_supervisor_pin_hash": PIN_HASH,
        "microplate_edge_enrollment_bundle": str(bundle),
        "microplate_edge_cli": str(edge_cli),
        "microplate_edge_litestream_endpoint": "https://localhost:9000",
        "microplate_edge_litestream_access_key_id": "lt-lab1-reader-01",
        "microplate_edge_litestream_secret_access_key": SECRETS["device_s3"],
        "microplate_edge_litestream_metrics_addr": "127.0.0.1:9091",
        "microplate_cloud_first_admin_email": "admin@lab.example.org",
        "microplate_cloud_first_admin_password": SECRETS["admin"],
        "microplate_cloud_minio_root_password": SECRETS["minio"],
        "microplate_cloud_public_host": "localhost",
        "microplate_cloud_mosquitto_user": "root" if os.geteuid() == 0 else os.environ["USER"],
        "microplate_cloud_mosquitto_port": mqtt_port,
        "microplate_cloud_mosquitto_local_port": mqtt_local_port,
        "microplate_monitoring_edge_metrics_token": "edge-metrics-token-0c3a",
        "microplate_monitoring_edge_targets": [
            {
                "site": "lab1",
                "device": "reader-01",
                "url": "https://reader-01.lab.example.org:8443",
                "litestream": "reader-01.lab.example.org:9091",
            }
        ],
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
