"""Readiness, metrics, status, docs and the live preview."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge.api import create_app
from edge.app import Appliance
from edge.auth import AuthConfig
from tests.edge.api.conftest import METRICS_TOKEN, upload_and_wait


def test_ready_and_metrics_with_the_metrics_token(anon: TestClient, operator: TestClient) -> None:
    upload_and_wait(operator, "S-M", seed=7)
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    res = anon.get("/ready", headers=headers)
    assert res.status_code == 200 and res.json()["ready"] is True
    res = anon.get("/metrics", headers=headers)
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain")
    text = res.text
    for name in (
        "microplate_inference_seconds_bucket",
        "microplate_runs_total",
        "microplate_outbox_depth",
        "microplate_outbox_oldest_age_seconds",
        "microplate_disk_free_bytes",
    ):
        assert name in text, name
    depth = re.search(r"^microplate_outbox_depth (\S+)$", text, re.MULTILINE)
    assert depth is not None and float(depth.group(1)) >= 1  # the run waits for the cloud


def test_ready_says_503_when_not_ready(
    app: FastAPI, operator: TestClient, appliance: Appliance
) -> None:
    detector = appliance.reading.detector
    appliance.reading.detector = None
    try:
        res = operator.get("/ready")
    finally:
        appliance.reading.detector = detector
    assert res.status_code == 503
    assert res.json()["ready"] is False and res.json()["checks"]["detector"] != "ok"


def test_status(operator: TestClient) -> None:
    body = operator.get("/api/status").json()
    assert body["camera"]["source"] == "fake"
    assert body["queue"]["capacity"] >= 1
    assert "backlog" in body["sync"]


def test_docs_need_a_session_and_are_off_in_production(
    app: FastAPI, anon: TestClient, operator: TestClient, appliance: Appliance
) -> None:
    assert anon.get("/docs").status_code == 401
    assert anon.get("/openapi.json").status_code == 401
    schema = operator.get("/openapi.json").json()
    assert "/api/runs" in schema["paths"] and "/api/calibration" in schema["paths"]
    assert "multipart/form-data" in schema["paths"]["/api/runs"]["post"]["requestBody"]["content"]
    assert "swagger" in operator.get("/docs").text.lower()
    config = AuthConfig.from_settings(appliance.settings)
    prod = create_app(
        appliance, auth_config=AuthConfig(**{**config.__dict__, "docs_enabled": False})
    )
    client = TestClient(prod)
    from tests.edge.api.conftest import sign_in

    sign_in(client)
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 404


def test_production_mode_without_secrets_refuses_to_start(appliance: Appliance) -> None:
    from edge.auth import AuthConfigError

    config = AuthConfig(production=True, credentials_dir=appliance.settings.data_dir / "x")
    with pytest.raises(AuthConfigError):
        create_app(appliance, auth_config=config)


def _fake_camera(appliance: Appliance) -> None:
    frame = np.zeros((120, 160, 3), dtype=np.uint8)
    cv2.circle(frame, (80, 60), 30, (0, 0, 255), -1)
    appliance.intake.source.preview_frame = lambda: frame  # type: ignore[method-assign]


def test_preview_jpeg_and_mjpeg(operator: TestClient, appliance: Appliance) -> None:
    assert operator.get("/api/capture/preview.jpg").status_code == 503  # fake camera: no view
    _fake_camera(appliance)
    res = operator.get("/api/capture/preview.jpg")
    assert res.status_code == 200 and res.content[:3] == b"\xff\xd8\xff"
    res = operator.get("/api/capture/preview.mjpg", params={"frames": 3})
    assert res.status_code == 200
    assert res.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
    parts = res.content.split(b"--frame\r\n")[1:]
    assert len(parts) == 3
    for part in parts:
        head, _, body = part.partition(b"\r\n\r\n")
        assert b"Content-Type: image/jpeg" in head
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        assert body[:length][:3] == b"\xff\xd8\xff" and body[length:] == b"\r\n"


def test_preview_streams_are_limited(
    app: FastAPI, operator: TestClient, appliance: Appliance
) -> None:
    _fake_camera(appliance)
    slots = app.state.preview_slots
    held = [slots.acquire(), slots.acquire()]
    assert None not in held
    res = operator.get("/api/capture/preview.mjpg", params={"frames": 1})
    assert res.status_code == 503 and res.json()["error"]["code"] == "preview_busy"
    for lease in held:
        slots.release(lease)
    assert operator.get("/api/capture/preview.mjpg", params={"frames": 1}).status_code == 200
    assert slots.in_use == 0  # the finished stream gave its slot back


def test_capture_trigger(operator: TestClient) -> None:
    res = operator.post("/api/capture", json={"sample_number": "S-CAP", "operator": "ann"})
    assert res.status_code == 202, res.text
    state = operator.get(f"/api/tickets/{res.json()['id']}", params={"wait": 20}).json()
    assert state["state"] == "done"
