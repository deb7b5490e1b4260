"""Runs the appliance's plate-quality gate held for review: stored, listed, never pooled."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from cloud.crud import results
from cloud.ingest.fastpath import insert_plain_runs
from cloud.models import Device, Run, Sample
from core.wire import WireError, encode_message, parse_message
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import run_message
from tests.cloud.world import World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("review"), s3_server, login_rate_per_minute=500
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


def _upsert(world: World, message) -> results.Applied:  # type: ignore[no-untyped-def]
    with world.sessions()() as session:
        device = session.get(Device, world.device_a)
        assert device is not None
        applied = results.upsert_run(session, message, device=device)
        session.commit()
        return applied


def test_a_held_reread_leaves_the_sample_and_the_earlier_read_alone(world: World) -> None:
    plate = uuid.uuid4()
    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
    good = run_message(
        site=world.slug_a, device="reader-1", sample_number="S-REV", plate_id=plate, captured_at=t0
    )
    held = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="S-REV",
        plate_id=plate,
        endpoints=(1,) * 8,
        captured_at=t0 + timedelta(minutes=1),
        review_reasons=("grid_misfit", "too_many_unread"),
    )
    first = _upsert(world, good)
    with world.sessions()() as session:
        before = session.get(Sample, first.sample_id)
        assert before is not None
        snapshot = (before.n_plates, before.rows_total, dict(before.distribution), before.gmt)
    _upsert(world, held)
    with world.sessions()() as session:
        sample = session.get(Sample, first.sample_id)
        assert sample is not None
        assert (sample.n_plates, sample.rows_total, dict(sample.distribution), sample.gmt) == (
            snapshot
        )
        assert sample.n_runs == 2
        old, new = session.get(Run, good.run_id), session.get(Run, held.run_id)
        assert old is not None and old.status == "current"
        assert new is not None and new.status == "needs_review"
        assert new.review_reasons == ["grid_misfit", "too_many_unread"]


def test_bulk_ingest_stores_the_status_too(world: World) -> None:
    held = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="S-REV-BULK",
        review_reasons=("not_a_plate",),
    )
    with world.sessions()() as session:
        device = session.get(Device, world.device_a)
        assert device is not None
        assert insert_plain_runs(session, [(held, device)], now=datetime.now(timezone.utc)) == 1
        session.commit()
    with world.sessions()() as session:
        run = session.get(Run, held.run_id)
        assert run is not None and run.status == "needs_review"
        assert run.review_reasons == ["not_a_plate"]
        sample = session.get(Sample, run.sample_id)
        assert sample is not None and sample.n_plates == 0 and sample.rows_total == 0


def test_api_lists_runs_to_review_in_scope(world: World) -> None:
    held = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="S-REV-API",
        review_reasons=("precision_disagreement",),
    )
    _upsert(world, held)
    headers = world.actors["viewer"].headers
    listed = world.client.get("/api/v1/runs", headers=headers, params={"status": "needs_review"})
    assert listed.status_code == 200
    body = {r["run_id"]: r for r in listed.json()}
    assert body[str(held.run_id)]["review_reasons"] == ["precision_disagreement"]
    assert all(r["status"] == "needs_review" for r in body.values())
    current = world.client.get("/api/v1/runs", headers=headers, params={"status": "current"})
    assert str(held.run_id) not in {r["run_id"] for r in current.json()}
    other = world.client.get(
        "/api/v1/runs",
        headers=world.actors["manager_b"].headers,
        params={"status": "needs_review"},
    )
    assert str(held.run_id) not in {r["run_id"] for r in other.json()}
    bad = world.client.get("/api/v1/runs", headers=headers, params={"status": "sideways"})
    assert bad.status_code == 422
    detail = world.client.get(f"/api/v1/runs/{held.run_id}", headers=headers).json()
    assert detail["status"] == "needs_review"
    assert detail["review_reasons"] == ["precision_disagreement"]
    assert not any(r["counted"] for r in detail["rows"])
    assert world.client.get("/api/v1/runs").status_code == 401


def test_wire_fields_are_optional_and_consistent() -> None:
    plain = run_message(site="site-a", device="reader-1", sample_number="S-W")
    raw = json.loads(encode_message(plain))
    for key in ("needs_review", "review_reasons", "reading"):
        raw.pop(key)  # a message from an appliance that predates the gate
    parsed = parse_message(json.dumps(raw).encode())
    assert parsed.needs_review is False and parsed.review_reasons == ()  # type: ignore[union-attr]
    held = json.loads(
        encode_message(
            run_message(
                site="site-a", device="reader-1", sample_number="S-W", review_reasons=("x_y",)
            )
        )
    )
    with pytest.raises(WireError, match="review_reasons"):
        parse_message(json.dumps({**held, "review_reasons": []}).encode())
    counted = json.loads(encode_message(plain))
    with pytest.raises(WireError, match="counts no row"):
        parse_message(
            json.dumps({**counted, "needs_review": True, "review_reasons": ["x"]}).encode()
        )
