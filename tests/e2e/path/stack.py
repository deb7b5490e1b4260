"""The whole system on loopback, started the way the docs say: a cloud API (uvicorn), its
ingest worker, a private Mosquitto reading the password and ACL files the cloud generates,
Postgres (a private database on the shared server), SeaweedFS as S3, and appliances started
as `microplate-edge serve` processes after `microplate-edge enroll`.

Used by the whole-path tests (`tests/e2e/path/`)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cloud.settings import CloudSettings
from tests.cloud.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "models" / "samples"
ADMIN_EMAIL = "admin@path.example"
ADMIN_PASSWORD = "whole-path-admin-pw-1"


def cloud_env(settings: CloudSettings) -> dict[str, str]:
    """The environment a person would export to run `microplate-cloud` against this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_")}
    env["PYTHONPATH"] = str(ROOT)
    for name in (
        "environment", "database_url", "mqtt_password_file", "mqtt_acl_file",
        "mosquitto_pid_file", "mqtt_broker_url", "api_base_url", "jwt_secret",
        "mqtt_ingest_password", "s3_endpoint_url", "s3_access_key", "s3_secret_key", "s3_bucket",
    ):  # fmt: skip
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"MICROPLATE_CLOUD_{name.upper()}"] = str(value)
    return env


def cloud_cli(settings: CloudSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud.cli", *args],
        env=cloud_env(settings),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Broker:
    """Mosquitto on the cloud's own password and ACL files; the cloud SIGHUPs it (pid file)."""

    def __init__(self, settings: CloudSettings, workdir: Path, port: int) -> None:
        assert settings.mqtt_password_file and settings.mqtt_acl_file
        assert settings.mosquitto_pid_file
        self.port, self.workdir, self.settings = port, workdir, settings
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {settings.mqtt_password_file}\n"
            f"acl_file {settings.mqtt_acl_file}\n"
            "persistence false\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], start_new_session=True)
        assert self.settings.mosquitto_pid_file is not None
        self.settings.mosquitto_pid_file.write_text(str(self.proc.pid), encoding="utf-8")
        wait_http_or_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def wait_http_or_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class CloudApi:
    def __init__(self, settings: CloudSettings, port: int) -> None:
        import uvicorn

        from cloud.app import create_app

        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="path-cloud", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the cloud API did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def admin_token(self) -> str:
        resp = httpx.post(
            f"{self.url}/api/v1/auth/login",
            json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])


@dataclass
class Appliance:
    """One `microplate-edge serve` process, configured by `microplate-edge enroll`."""

    home: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    secret: str = "path-operator-secret-1"

    @property
    def config(self) -> Path:
        return self.home / "edge.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_")}
        env["PYTHONPATH"] = str(ROOT)
        return env

    def write_base_config(self, plate: str = "plate-01") -> None:
        """What an installer writes before enrolling: paths, camera, HTTP, no sync."""
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / f"{plate}.calibration.json", data / "calibration.json")
        (self.home / "operator-secret").write_text(self.secret, encoding="utf-8")
        self.config.write_text(
            json.dumps(
                {
                    "data_dir": str(data),
                    "share_dir": str(self.home / "share"),
                    "capture": {"type": "files", "paths": [str(SAMPLES / f"{plate}.jpg")]},
                    "auth": {"operator_secret_file": str(self.home / "operator-secret")},
                    "http": {"port": self.port},
                    "sync": {"status_interval_s": 1.0, "poll_s": 0.1, "reconnect_max_s": 2},
                }
            ),
            encoding="utf-8",
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge.cli", "--config", str(self.config), *args],
            env=self.env(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def serve(self) -> str:
        """Start `serve`; returns the first line it prints (its URL)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--config", str(self.config), "serve"],
            env=self.env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(self.home / "serve.log", "w"),  # noqa: SIM115 (lives with the process)
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.home / "serve.log").read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return line
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the appliance did not answer /health")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def session(self) -> httpx.Client:
        resp = httpx.post(f"{self.url}/api/auth/sign-in", json={"secret": self.secret})
        resp.raise_for_status()
        token = resp.json()["token"]
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def capture(self, client: httpx.Client, sample: str) -> str:
        """Capture one plate; returns the run id once it is committed."""
        ticket = client.post("/api/capture", json={"sample_number": sample})
        assert ticket.status_code == 202, ticket.text
        tid = ticket.json()["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state: dict[str, Any] = client.get(f"/api/tickets/{tid}", params={"wait": 10}).json()
            if state["state"] == "done" and state.get("run_id"):
                return str(state["run_id"])
            assert state["state"] not in ("failed", "error"), state
        raise TimeoutError("the plate was never read")
