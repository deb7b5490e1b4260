"""Calibration over HTTP: the old system's file as the body, proposals, refusals."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from edge.app import Appliance
from tests.edge.api.conftest import error_of

# The old system's file, as committed with the core tests (identical to shared/reference/).
REFERENCE = Path(__file__).resolve().parents[2] / "core" / "data" / "roi_calibration.json"


def test_legacy_file_is_accepted_unchanged(
    operator: TestClient, supervisor: TestClient, appliance: Appliance
) -> None:
    body = REFERENCE.read_bytes()
    res = supervisor.put(
        "/api/calibration", content=body, headers={"content-type": "application/json"}
    )
    assert res.status_code == 200, res.text
    out = res.json()
    legacy = json.loads(body)
    assert out["columns"] == legacy["columns"] and out["rows"] == legacy["rows"]
    assert (out["image_width"], out["image_height"]) == (1700, 1200)
    assert operator.get("/api/calibration").json()["grid_id"] == out["grid_id"]
    actions = [r[0] for r in appliance.store.read().execute("SELECT action FROM audit")]
    assert "calibration.set" in actions


def test_bad_grid_is_refused_naming_the_value(supervisor: TestClient) -> None:
    legacy = json.loads(REFERENCE.read_text())
    legacy["columns"][4] = 500.0  # below columns[3]
    res = supervisor.put("/api/calibration", json=legacy)
    assert res.status_code == 422
    err = error_of(res)
    assert err["code"] == "invalid_calibration" and "columns[4]" in err["message"]
    res = supervisor.put("/api/calibration", json={"columns": "nope"})
    assert res.status_code == 422
    res = supervisor.put("/api/calibration", json=[1, 2, 3])
    assert res.status_code == 422


def test_delete_then_get_is_404(supervisor: TestClient) -> None:
    res = supervisor.put(
        "/api/calibration",
        content=REFERENCE.read_bytes(),
        headers={"content-type": "application/json"},
    )
    assert res.status_code == 200
    assert supervisor.delete("/api/calibration").status_code == 204
    res = supervisor.get("/api/calibration")
    assert res.status_code == 404 and error_of(res)["code"] == "no_calibration"


def test_proposal_round_trips_through_put(supervisor: TestClient) -> None:
    res = supervisor.post("/api/calibration/proposal")
    assert res.status_code == 200, res.text
    proposal = res.json()
    assert len(proposal["columns"]) == 13 and len(proposal["rows"]) == 9
    assert supervisor.put("/api/calibration", json=proposal).status_code == 200


def test_the_grid_may_name_its_reading_mode(
    operator: TestClient, supervisor: TestClient, appliance: Appliance
) -> None:
    legacy = json.loads(REFERENCE.read_text())
    res = supervisor.put("/api/calibration", json={**legacy, "reading": "untilted"})
    assert res.status_code == 200, res.text
    assert operator.get("/api/calibration").json()["reading"] == "untilted"
    saved = json.loads(appliance.settings.resolved_calibration_path.read_text())
    assert saved["reading"] == "untilted" and saved["format_version"] == 3
    res = supervisor.put("/api/calibration", json={**legacy, "reading": "sideways"})
    assert res.status_code == 422 and "reading" in error_of(res)["message"]
    res = supervisor.put("/api/calibration", json=legacy)
    assert res.json()["reading"] is None  # the appliance's runtime setting decides again
