"""Results: idempotent upserts and events, pooled samples, and the results API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import func, select

from cloud.crud import results
from cloud.models import Device, Run, RunRow, RunWell, Sample
from core.labware import render_csv_bytes
from core.pooling import PlateRead, pool_sample
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import deleted_event, run_message
from tests.cloud.world import World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

# DOMAIN.md's worked example: two plates of one sample.
PLATE_1 = (5, 6, 5, 7, 4, 6, 5, None)
PLATE_2 = (6, 6, 5, 5, 7, 8, 6, 6)


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("results"), s3_server, login_rate_per_minute=500
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


def _device(session, world: World, which: str = "a") -> Device:  # type: ignore[no-untyped-def]
    device = session.get(Device, world.device_a if which == "a" else world.device_b)
    assert device is not None
    return device


def _upsert(world: World, message, which: str = "a") -> results.Applied:  # type: ignore[no-untyped-def]
    with world.sessions()() as session:
        applied = results.upsert_run(session, message, device=_device(session, world, which))
        session.commit()
        return applied


def _sample(world: World, sample_id: uuid.UUID) -> Sample:
    with world.sessions()() as session:
        sample = session.get(Sample, sample_id)
        assert sample is not None
        return sample


def test_upsert_stores_run_wells_rows_and_pools(world: World) -> None:
    msg1 = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-001", endpoints=PLATE_1
    )
    msg2 = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-001", endpoints=PLATE_2
    )
    a1, a2 = _upsert(world, msg1), _upsert(world, msg2)
    assert a1.status == a2.status == "applied"
    assert a1.sample_id == a2.sample_id and a1.sample_id is not None
    with world.sessions()() as session:
        wells = session.scalar(select(RunWell.wells).where(RunWell.run_id == msg1.run_id))
        rows = session.scalar(select(func.count()).where(RunRow.run_id == msg1.run_id))
    assert wells is not None and (len(wells), rows) == (96, 8)
    assert [w["well_id"] for w in wells[:13]] == [*(f"A{c}" for c in range(1, 13)), "B1"]
    assert {w["state"] for w in wells} <= {"flowing", "agglutinated", "invalid", "unread"}
    sample = _sample(world, a1.sample_id)
    counts = {k: v for k, v in sample.distribution.items() if v}
    # Row H of plate 1 is unread: it lands in column 0 of the distribution, not in a titre bin.
    assert {k: counts[k] for k in ("4", "5", "6", "7", "8")} == {
        "4": 1,
        "5": 5,
        "6": 6,
        "7": 2,
        "8": 1,
    }
    expected = pool_sample(
        "S-001",
        [_read(msg1), _read(msg2)],
        n_cols=12,
    )
    assert sample.summary == expected.model_dump(mode="json")
    assert sample.n_plates == 2 and sample.n_runs == 2
    world.extra["s001"] = (a1.sample_id, msg1, msg2)


def _read(msg) -> PlateRead:  # type: ignore[no-untyped-def]
    return PlateRead(
        run_id=msg.run_id,
        sample_number=msg.sample_number,
        plate_id=msg.plate_id,
        read_at=msg.captured_at,
        rows=msg.rows,
    )


def test_same_edit_is_a_no_op_and_newer_edit_replaces(world: World) -> None:
    msg = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-EDIT", endpoints=(3,) * 8
    )
    first = _upsert(world, msg)
    assert _upsert(world, msg).status == "duplicate"
    assert _sample(world, first.sample_id).summary["statistics"]["n"] == 8  # type: ignore[arg-type]
    newer = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="S-EDIT",
        endpoints=(4,) * 8,
        run_id=msg.run_id,
        plate_id=msg.plate_id,
        edit=1,
        captured_at=msg.captured_at,
    )
    assert _upsert(world, newer).status == "applied"
    older = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="S-EDIT",
        endpoints=(9,) * 8,
        run_id=msg.run_id,
        plate_id=msg.plate_id,
        edit=0,
        captured_at=msg.captured_at,
    )
    assert _upsert(world, older).status == "duplicate"
    sample = _sample(world, first.sample_id)
    assert sample.distribution["4"] == 8 and sample.distribution["3"] == 0
    with world.sessions()() as session:
        wells = session.scalar(select(RunWell.wells).where(RunWell.run_id == msg.run_id))
        assert wells is not None and len(wells) == 96


def test_reread_of_a_plate_replaces_it_instead_of_adding(world: World) -> None:
    plate = uuid.uuid4()
    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
    first = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="S-RR",
        endpoints=(2,) * 8,
        plate_id=plate,
        captured_at=t0,
    )
    again = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="S-RR",
        endpoints=(3,) * 8,
        plate_id=plate,
        captured_at=t0 + timedelta(minutes=1),
    )
    _upsert(world, first)
    applied = _upsert(world, again)
    sample = _sample(world, applied.sample_id)
    assert sample.n_plates == 1 and sample.rows_total == 8 and sample.distribution["3"] == 8
    with world.sessions()() as session:
        old = session.get(Run, first.run_id)
        assert old is not None and old.status == "superseded"


def test_delete_event_recomputes_and_is_idempotent(world: World) -> None:
    keep = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-DEL", endpoints=(2,) * 8
    )
    gone = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-DEL", endpoints=(5,) * 8
    )
    _upsert(world, keep)
    applied = _upsert(world, gone)
    assert _sample(world, applied.sample_id).n_plates == 2
    with world.sessions()() as session:
        out = results.apply_event(
            session, deleted_event(gone.run_id, 1), device=_device(session, world)
        )
        session.commit()
    assert out.status == "applied"
    sample = _sample(world, applied.sample_id)
    assert sample.n_plates == 1 and sample.distribution["5"] == 0 and sample.distribution["2"] == 8
    with world.sessions()() as session:
        again = results.apply_event(
            session, deleted_event(gone.run_id, 1), device=_device(session, world)
        )
        session.commit()
    assert again.status == "duplicate"


def test_event_that_overtakes_its_run_is_applied_on_arrival(world: World) -> None:
    msg = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-EARLY", endpoints=(4,) * 8
    )
    with world.sessions()() as session:
        results.apply_event(session, deleted_event(msg.run_id, 1), device=_device(session, world))
        session.commit()
    applied = _upsert(world, msg)
    with world.sessions()() as session:
        run = session.get(Run, msg.run_id)
        assert run is not None and run.status == "deleted"
    assert _sample(world, applied.sample_id).n_plates == 0


def test_runs_from_the_wrong_device_are_refused(world: World) -> None:
    msg = run_message(site=world.slug_a, device="reader-1", sample_number="S-X")
    with world.sessions()() as session, pytest.raises(results.ResultError):
        results.upsert_run(session, msg, device=_device(session, world, "b"))
    _upsert(world, msg)
    spoof = run_message(
        site=world.slug_b, device="reader-1", sample_number="S-X", run_id=msg.run_id, edit=5
    )
    with world.sessions()() as session, pytest.raises(results.ResultError):
        results.upsert_run(session, spoof, device=_device(session, world, "b"))


def _get(world: World, role: str, path: str, **params: object) -> httpx.Response:
    return world.client.get(path, headers=world.actors[role].headers, params=params)  # type: ignore[arg-type]


def test_sample_list_is_paged_by_sample_and_scoped(world: World) -> None:
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(5):
        for plate in range(2):
            _upsert(
                world,
                run_message(
                    site=world.slug_a,
                    device="reader-1",
                    sample_number=f"PAGE-{i}",
                    captured_at=base + timedelta(hours=i, minutes=plate),
                    submission_number="SUB-9",
                ),
            )
    _upsert(
        world,
        run_message(
            site=world.slug_b,
            device="reader-1",
            sample_number="PAGE-B",
            captured_at=base,
            submission_number="SUB-9",
        ),
        "b",
    )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"q": "SUB-9", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = _get(world, "manager", "/api/v1/samples", **params).json()
        seen += [s["sample_number"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"PAGE-{i}" for i in reversed(range(5))]  # 5 samples, not 10 runs
    admin = [
        s["sample_number"]
        for s in _get(world, "admin", "/api/v1/samples", q="SUB-9", limit=50).json()["items"]
    ]
    assert "PAGE-B" in admin
    other = _get(world, "manager_b", "/api/v1/samples", q="SUB-9").json()["items"]
    assert [s["sample_number"] for s in other] == ["PAGE-B"]
    # Asking for another site's data explicitly still returns nothing.
    assert _get(world, "viewer", "/api/v1/samples", site_id=str(world.site_b)).json()["items"] == []
    by_number = _get(world, "viewer", "/api/v1/samples", q="PAGE-3").json()["items"]
    assert [s["sample_number"] for s in by_number] == ["PAGE-3"]
    dated = _get(
        world,
        "viewer",
        "/api/v1/samples",
        q="SUB-9",
        read_from=(base + timedelta(hours=3)).isoformat(),
    ).json()["items"]
    assert {s["sample_number"] for s in dated} == {"PAGE-3", "PAGE-4"}
    by_device = _get(
        world, "admin", "/api/v1/samples", q="SUB-9", device_id=str(world.device_b)
    ).json()
    assert [s["sample_number"] for s in by_device["items"]] == ["PAGE-B"]
    assert _get(world, "viewer", "/api/v1/samples", cursor="not-a-cursor").status_code == 400


def test_flag_filter(world: World) -> None:
    _upsert(
        world,
        run_message(
            site=world.slug_a,
            device="reader-1",
            sample_number="S-FLAG",
            endpoints=(0, 12, 3, 3, 3, 3, 3, None),
        ),
    )
    flagged = _get(world, "viewer", "/api/v1/samples", flag="no_inhibition", limit=200).json()[
        "items"
    ]
    assert "S-FLAG" in [s["sample_number"] for s in flagged]
    assert "PAGE-1" not in [s["sample_number"] for s in flagged]


def test_sample_detail_runs_run_detail_and_export(world: World) -> None:
    sample_id, msg1, msg2 = world.extra["s001"]
    detail = _get(world, "viewer", f"/api/v1/samples/{sample_id}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["statistics"]["n"] == _sample(world, sample_id).summary["statistics"]["n"]
    assert set(body["current_run_ids"]) == {str(msg1.run_id), str(msg2.run_id)}
    runs = _get(world, "viewer", f"/api/v1/samples/{sample_id}/runs").json()
    assert {r["run_id"] for r in runs} == {str(msg1.run_id), str(msg2.run_id)}
    run = _get(world, "viewer", f"/api/v1/runs/{msg1.run_id}").json()
    assert len(run["wells"]) == 96 and [r["endpoint"] for r in run["rows"]][:7] == [
        5,
        6,
        5,
        7,
        4,
        6,
        5,
    ]
    assert _get(world, "manager_b", f"/api/v1/runs/{msg1.run_id}").status_code == 404
    summary = pool_sample("S-001", [_read(msg1), _read(msg2)], n_cols=12)
    for template in ("labware", "labware-legacy"):
        csv = _get(world, "viewer", f"/api/v1/samples/{sample_id}/export.csv", template=template)
        assert csv.status_code == 200
        assert csv.content == render_csv_bytes(summary, template=template)
        assert "attachment" in csv.headers["content-disposition"]
    legacy = _get(
        world, "viewer", f"/api/v1/samples/{sample_id}/export.csv", template="labware-legacy"
    ).text
    assert "S-001,T001,GMT,5.8" in legacy or "S-001,T001,GMT,5.80" in legacy


def test_annotated_image_via_presigned_urls(world: World) -> None:
    _, msg1, _ = world.extra["s001"]
    device = {"Authorization": f"Bearer {world.device_token_a}"}
    put = world.client.post(
        "/api/v1/device/images/presign",
        json={"run_id": str(msg1.run_id), "kind": "annotated", "size_bytes": 11},
        headers=device,
    ).json()
    assert (
        httpx.put(put["url"], content=b"\xff\xd8annotated", headers=put["headers"]).status_code
        == 200
    )
    got = _get(world, "viewer", f"/api/v1/runs/{msg1.run_id}/image").json()
    assert got["method"] == "GET" and got["expires_in"] <= 300
    assert httpx.get(got["url"]).content == b"\xff\xd8annotated"
    # Device B may not write images for device A's run.
    other = {"Authorization": f"Bearer {world.device_token_b}"}
    refused = world.client.post(
        "/api/v1/device/images/presign",
        json={"run_id": str(msg1.run_id), "kind": "annotated", "size_bytes": 11},
        headers=other,
    )
    assert refused.status_code == 404


def test_manager_deletes_a_run_and_the_sample_follows(world: World) -> None:
    gone = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-MDEL", endpoints=(7,) * 8
    )
    keep = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-MDEL", endpoints=(1,) * 8
    )
    _upsert(world, keep)
    sample_id = _upsert(world, gone).sample_id
    assert (
        world.client.delete(
            f"/api/v1/runs/{gone.run_id}", headers=world.actors["viewer"].headers
        ).status_code
        == 403
    )
    assert (
        world.client.delete(
            f"/api/v1/runs/{gone.run_id}", headers=world.actors["manager_b"].headers
        ).status_code
        == 404
    )
    assert (
        world.client.delete(
            f"/api/v1/runs/{gone.run_id}", headers=world.actors["manager"].headers
        ).status_code
        == 204
    )
    sample = _get(world, "viewer", f"/api/v1/samples/{sample_id}").json()
    assert sample["n_plates"] == 1 and sample["distribution"]["7"] == 0
    audit = _get(world, "admin", "/api/v1/audit", action="run.deleted").json()
    assert any(e["target_id"] == str(gone.run_id) for e in audit)


def test_websocket_pushes_results_to_allowed_dashboards(world: World) -> None:
    with (
        world.client.websocket_connect("/api/v1/ws") as ws_a,
        world.client.websocket_connect("/api/v1/ws") as ws_b,
    ):
        ws_a.send_text(world.actors["viewer"].token)
        ws_b.send_text(world.actors["manager_b"].token)
        assert ws_a.receive_json()["type"] == "hello"
        assert ws_b.receive_json()["type"] == "hello"
        msg_b = run_message(site=world.slug_b, device="reader-1", sample_number="WS-B")
        msg_a = run_message(site=world.slug_a, device="reader-1", sample_number="WS-A")
        _upsert(world, msg_b, "b")
        _upsert(world, msg_a, "a")
        # Events of earlier tests may still be in flight: read until ours arrives, and
        # check that nothing of the other site ever reached the dashboard.
        seen_a = _until(ws_a, str(msg_a.run_id))
        assert {e["site_id"] for e in seen_a} == {str(world.site_a)}
        seen_b = _until(ws_b, str(msg_b.run_id))
        assert {e["site_id"] for e in seen_b} == {str(world.site_b)}


def _until(ws, run_id: str, limit: int = 50) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    seen: list[dict[str, str]] = []
    for _ in range(limit):
        event = ws.receive_json()
        seen.append(event)
        if event.get("run_id") == run_id:
            return seen
    raise AssertionError(f"run {run_id} never arrived; got {seen}")


def test_websocket_refuses_bad_tokens(world: World) -> None:
    from starlette.websockets import WebSocketDisconnect

    with world.client.websocket_connect("/api/v1/ws") as ws:
        ws.send_text(world.device_token_a)
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 1008


def test_device_status_is_stored_in_order_and_pushed(world: World) -> None:
    from core.wire import DeviceStatus

    def status(at: datetime, backlog: int) -> DeviceStatus:
        return DeviceStatus(
            device_id="reader-1",
            site_id=world.slug_a,
            online=True,
            version="1.0",
            model="hi-yolo",
            backend="onnx",
            backlog=backlog,
            disk_free_bytes=10**9,
            at=at,
        )

    now = datetime.now(timezone.utc)
    with world.client.websocket_connect("/api/v1/ws") as ws:
        ws.send_text(world.actors["viewer"].token)
        assert ws.receive_json()["type"] == "hello"
        with world.sessions()() as session:
            device = _device(session, world)
            assert results.record_device_status(session, status(now, 3), device=device)
            assert not results.record_device_status(
                session, status(now - timedelta(minutes=1), 9), device=device
            )
            session.commit()
        seen = []
        for _ in range(50):
            event = ws.receive_json()
            seen.append(event)
            if event["type"] == "device":
                break
        assert seen[-1] == {
            "type": "device",
            "site_id": str(world.site_a),
            "device_id": str(world.device_a),
            "online": True,
            "backlog": 3,
        }
    got = _get(world, "viewer", f"/api/v1/devices/{world.device_a}").json()
    assert got["last_status"]["backlog"] == 3
    with world.sessions()() as session, pytest.raises(results.ResultError):
        results.record_device_status(session, status(now, 1), device=_device(session, world, "b"))
