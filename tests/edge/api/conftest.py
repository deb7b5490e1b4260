"""A real `Appliance` (fake camera, fake detector, temp dirs) behind `create_app`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from edge.api import create_app
from edge.app import Appliance
from edge.config import EdgeSettings
from tests.edge import plates

OPERATOR_SECRET = "test-operator-secret-0123456789"
SUPERVISOR_PIN = "2468"
METRICS_TOKEN = "test-metrics-token-abcdef"
# Cheap argon2 parameters (read back from the hash on verify) keep the suite fast.
PIN_HASH = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),)).hash(
    SUPERVISOR_PIN
)
ROW_ENDPOINTS = [4, 6, 5, 7, 4, 6, 5, 0]  # row A flows to column 4


def plate_jpeg(seed: int = 0) -> bytes:
    """A synthetic plate; its bytes differ per seed (the appliance dedups by hash)."""
    return plates.jpeg(plates.plate_image(ROW_ENDPOINTS, seed=seed))


def make_settings(tmp_path: Path, **overrides: Any) -> EdgeSettings:
    values: dict[str, Any] = {
        "mode": "development",
        "data_dir": tmp_path / "data",
        "share_dir": tmp_path / "share",
        "capture": {"type": "fake"},
        "detector": plates.fake_detector(ROW_ENDPOINTS),
        "auth": {
            "operator_secret": OPERATOR_SECRET,
            "supervisor_pin_hash": PIN_HASH,
            "metrics_token": METRICS_TOKEN,
        },
        "retention": {"disk_floor_mb": 0},
    }
    values.update(overrides)
    return EdgeSettings(**values)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings and credentials come only from the test, never from the developer's machine."""
    for key in list(os.environ):
        if key.startswith("MICROPLATE_EDGE_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env file


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(make_settings(tmp_path))
    app.start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def app(appliance: Appliance) -> FastAPI:
    return create_app(appliance)


@pytest.fixture
def anon(app: FastAPI) -> TestClient:
    return TestClient(app)


def sign_in(client: TestClient, *, supervisor: bool = False) -> str:
    """Sign the client in (cookie kept by the client); return the bearer token."""
    res = client.post("/api/auth/sign-in", json={"secret": OPERATOR_SECRET})
    assert res.status_code == 200, res.text
    token: str = res.json()["token"]
    if supervisor:
        res = client.post("/api/auth/elevate", json={"pin": SUPERVISOR_PIN})
        assert res.status_code == 200, res.text
        assert res.json()["role"] == "supervisor"
    return token


@pytest.fixture
def operator(app: FastAPI) -> TestClient:
    client = TestClient(app)
    sign_in(client)
    return client


@pytest.fixture
def supervisor(app: FastAPI) -> TestClient:
    client = TestClient(app)
    sign_in(client, supervisor=True)
    return client


def upload(client: TestClient, sample: str = "S-001", seed: int = 0, **fields: str) -> Any:
    data = {"sample_number": sample, **fields}
    files = {"file": (f"plate-{seed}.jpg", plate_jpeg(seed), "image/jpeg")}
    return client.post("/api/runs", data=data, files=files)


def upload_and_wait(client: TestClient, sample: str = "S-001", seed: int = 0) -> str:
    """Upload a plate, wait for it to be read; return the run id."""
    res = upload(client, sample, seed)
    assert res.status_code == 202, res.text
    ticket = res.json()
    if ticket.get("run_id"):
        return str(ticket["run_id"])
    state = client.get(f"/api/tickets/{ticket['id']}", params={"wait": 20}).json()
    assert state["state"] == "done", state
    return str(state["run_id"])


def error_of(res: Any) -> dict[str, str]:
    """The API's error body; fails the test if the shape is not the documented one."""
    body = res.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in res.text
    return dict(body["error"])
