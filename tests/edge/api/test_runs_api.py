"""Runs and samples over HTTP against the real appliance (fake camera and detector)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge.api.limits import ApiLimits
from edge.app import Appliance
from tests.edge.api.conftest import error_of, plate_jpeg, sign_in, upload, upload_and_wait


def test_upload_is_read_stored_and_listed(operator: TestClient) -> None:
    run_id = upload_and_wait(operator, "S-001", seed=1)
    detail = operator.get(f"/api/runs/{run_id}").json()
    assert detail["run_id"] == run_id
    assert detail["sample_number"] == "S-001"
    assert len(detail["wells"]) == 96
    assert detail["rows"][0]["endpoint"] == 4  # row A flows to column 4 (fake detector script)
    page = operator.get("/api/runs", params={"sample_number": "S-001"}).json()
    assert page["total"] == 1 and page["items"][0]["run_id"] == run_id
    sample = operator.get("/api/samples/S-001").json()
    assert sample["plates"] == 1
    assert [r["run_id"] for r in sample["runs"]] == [run_id]
    samples = operator.get("/api/samples", params={"query": "S-0"}).json()
    assert [s["sample_number"] for s in samples["items"]] == ["S-001"]


def test_upload_accepts_common_type_aliases(operator: TestClient) -> None:
    for i, declared in enumerate(("image/jpg", "application/octet-stream", "")):
        files = {"file": (f"p{i}.jpg", plate_jpeg(40 + i), declared)}
        res = operator.post("/api/runs", data={"sample_number": "S-AL"}, files=files)
        assert res.status_code == 202, (declared, res.text)


def test_run_images_are_served(operator: TestClient) -> None:
    run_id = upload_and_wait(operator, "S-002", seed=2)
    for kind in ("raw", "annotated", "thumbnail"):
        res = operator.get(f"/api/runs/{run_id}/images/{kind}")
        assert res.status_code == 200, kind
        assert res.headers["content-type"].startswith("image/")
        assert res.content[:3] in (b"\xff\xd8\xff", b"\x89PN")
    res = operator.get(f"/api/runs/{run_id}/images/secret")
    assert res.status_code == 422


def test_reread_supersedes_and_delete_needs_supervisor(
    operator: TestClient, supervisor: TestClient, appliance: Appliance
) -> None:
    run_id = upload_and_wait(operator, "S-003", seed=3)
    res = operator.post(f"/api/runs/{run_id}/reread")
    assert res.status_code == 202
    state = operator.get(f"/api/tickets/{res.json()['id']}", params={"wait": 20}).json()
    assert state["state"] == "done"
    new_id = state["run_id"]
    assert new_id != run_id
    assert operator.get(f"/api/runs/{run_id}").json()["status"] == "superseded"
    assert operator.get("/api/samples/S-003").json()["plates"] == 1  # a re-read never adds

    assert operator.delete(f"/api/runs/{new_id}", params={"reason": "bubbles"}).status_code == 403
    res = supervisor.delete(f"/api/runs/{new_id}")
    assert res.status_code == 422 and "reason" in error_of(res)["message"]
    assert supervisor.delete(f"/api/runs/{new_id}", params={"reason": "bubbles"}).status_code == 204
    detail = operator.get(f"/api/runs/{new_id}").json()
    assert detail["status"] == "deleted" and detail["deleted_reason"] == "bubbles"
    actions = [r[0] for r in appliance.store.read().execute("SELECT action FROM audit")]
    assert "run.delete" in actions


def test_unknown_ids_are_clear_404s(operator: TestClient) -> None:
    for path in (
        "/api/runs/00000000-0000-4000-8000-00000000dead",
        "/api/runs/00000000-0000-4000-8000-00000000dead/images/raw",
        "/api/tickets/00000000-0000-4000-8000-00000000dead",
        "/api/samples/NOPE-1",
    ):
        res = operator.get(path)
        assert res.status_code == 404, path
        assert error_of(res)["code"]
    res = operator.get("/api/runs/..%2F..%2Fetc")
    assert res.status_code in (404, 422)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_pagination_is_bounded(operator: TestClient, params: dict, field: str) -> None:
    for path in ("/api/runs", "/api/samples"):
        res = operator.get(path, params=params)
        assert res.status_code == 422
        assert field in error_of(res)["message"]


def test_ticket_wait_is_bounded(operator: TestClient) -> None:
    res = operator.get("/api/tickets/00000000-0000-4000-8000-000000000001", params={"wait": 121})
    assert res.status_code == 422 and "wait" in error_of(res)["message"]


def test_upload_refuses_wrong_type_empty_and_bad_sample(operator: TestClient) -> None:
    res = operator.post(
        "/api/runs",
        data={"sample_number": "S-1"},
        files={"file": ("x.jpg", b"%PDF-1.4 not an image", "image/jpeg")},
    )
    assert res.status_code == 415 and error_of(res)["code"] == "unsupported_media_type"
    res = operator.post(
        "/api/runs",
        data={"sample_number": "S-1"},
        files={"file": ("x.png", plate_jpeg(), "image/png")},  # declared PNG, is JPEG
    )
    assert res.status_code == 415
    res = operator.post(
        "/api/runs", data={"sample_number": "S-1"}, files={"file": ("x.jpg", b"", "image/jpeg")}
    )
    assert res.status_code == 422
    res = operator.post("/api/runs", json={"sample_number": "S-1"})
    assert res.status_code == 415
    res = operator.post("/api/runs", data={"sample_number": "S-1"}, files={"other": ("a", b"b")})
    assert res.status_code == 422
    res = upload(operator, sample="../..")  # nothing safe left once sanitised
    assert res.status_code == 422
    assert "sample number" in error_of(res)["message"].lower()
    res = upload(operator, sample="")
    assert res.status_code == 422
    assert "sample_number" in error_of(res)["message"]


def test_upload_size_limit(appliance: Appliance) -> None:
    from edge.api import create_app

    app = create_app(appliance, limits=ApiLimits(max_upload_bytes=2048))
    client = TestClient(app)
    sign_in(client)
    res = upload(client)
    assert res.status_code == 413
    assert error_of(res)["code"] == "too_large"


def test_json_body_limit(app: FastAPI, supervisor: TestClient) -> None:
    huge = {"columns": [1.0] * 100_000}
    res = supervisor.put("/api/calibration", json=huge)
    assert res.status_code == 413
    assert error_of(res)["code"] == "too_large"
