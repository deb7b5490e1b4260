"""User-caused errors give the documented JSON error; nothing leaks a trace or a 500."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge.app import Appliance
from edge.errors import Busy, CaptureUnavailable, DiskFull
from tests.edge.api.conftest import error_of, sign_in, upload


def test_unknown_route_and_method(operator: TestClient, anon: TestClient) -> None:
    res = operator.get("/api/nothing-here")
    assert res.status_code == 404 and error_of(res)["code"] == "not_found"
    res = operator.put("/api/runs")
    assert res.status_code == 405 and error_of(res)["code"] == "method_not_allowed"


def test_malformed_json(supervisor: TestClient) -> None:
    res = supervisor.patch(
        "/api/settings", content=b"{'lang': ", headers={"content-type": "application/json"}
    )
    assert res.status_code == 422 and error_of(res)["code"] == "invalid_input"
    res = supervisor.patch("/api/settings", json={"start_dilution": -3, "bogus": 1})
    err = error_of(res)
    assert res.status_code == 422 and "start_dilution" in err["message"]
    assert {f["field"] for f in res.json()["error"]["fields"]} >= {"start_dilution", "bogus"}


def test_settings_patch_cannot_clear_a_required_setting(supervisor: TestClient) -> None:
    res = supervisor.patch("/api/settings", json={"dilution_factor": None})
    assert res.status_code == 422
    assert "dilution_factor cannot be empty" in error_of(res)["message"]
    res = supervisor.patch("/api/settings", json={"protective_titre": 40})
    assert res.status_code == 200 and res.json()["protective_titre"] == 40
    res = supervisor.patch("/api/settings", json={"protective_titre": None})  # optional: clears
    assert res.status_code == 200 and res.json()["protective_titre"] is None


def test_streamed_body_over_the_limit_is_413(supervisor: TestClient) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"columns": ['
        for _ in range(100):
            yield b"1.0, " * 1000
        yield b"1.0]}"

    res = supervisor.put(
        "/api/calibration", content=chunks(), headers={"content-type": "application/json"}
    )
    assert res.status_code == 413 and error_of(res)["code"] == "too_large"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Busy(message="The queue is full: try again in a few seconds."), 503),
        (DiskFull(message="The disk is full: ask a supervisor."), 507),
        (CaptureUnavailable(message="The camera is not answering."), 503),
    ],
)
def test_appliance_refusals_map_to_statuses(
    operator: TestClient, appliance: Appliance, monkeypatch: pytest.MonkeyPatch, error, status
) -> None:  # type: ignore[no-untyped-def]
    def refuse(*_a, **_k):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(appliance.intake, "capture", refuse)
    res = operator.post("/api/capture", json={"sample_number": "S-1"})
    assert res.status_code == status
    err = error_of(res)
    assert err["code"] == error.code and err["message"] == error.message
    if status == 503:
        assert int(res.headers["retry-after"]) >= 1


def test_real_disk_floor_refuses_capture_cleanly(
    operator: TestClient, appliance: Appliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    floor = appliance.settings.retention.model_copy(update={"disk_floor_mb": 10**9})
    monkeypatch.setattr(appliance.settings, "retention", floor)
    res = operator.post("/api/capture", json={"sample_number": "S-1"})
    assert res.status_code == 507
    assert "disk" in error_of(res)["message"].lower()


def test_a_bug_is_a_plain_500_without_a_trace(
    app: FastAPI, appliance: Appliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise KeyError("internal detail")

    monkeypatch.setattr(appliance.runs, "list_runs", broken)
    client = TestClient(app, raise_server_exceptions=False)
    sign_in(client)
    res = client.get("/api/runs")
    assert res.status_code == 500
    err = error_of(res)
    assert err["code"] == "internal_error" and "internal detail" not in res.text


def test_security_headers(operator: TestClient) -> None:
    res = operator.get("/api/runs")
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["x-frame-options"] == "DENY"
    assert res.headers["cache-control"] == "no-store"


def test_busy_queue_from_real_uploads_never_500s(operator: TestClient) -> None:
    codes = {upload(operator, f"S-B{i}", seed=100 + i).status_code for i in range(12)}
    assert codes <= {202, 503}
