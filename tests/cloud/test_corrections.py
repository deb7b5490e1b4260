"""Operator corrections reach the cloud: edit 1 through the real broker and ingest, both calls
stored per well, the sample recomputed, and field accuracy on the review page, its chart
data and /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text

from cloud.crud import field, results
from cloud.crud.scope import Scope
from cloud.models import Device, Run, RunWell, Sample
from core.review import review_edit
from core.wire import RunMessage
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.factory import run_message
from tests.cloud.world import World, build_world, open_client
from tests.sync.conftest import Broker, broker, cloud_db  # noqa: F401 (fixtures)
from tests.sync.mqttc import MqttProbe
from tests.sync.world import new_run, template_message

METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
AT = datetime.now(timezone.utc).replace(microsecond=0)


def _wait(engine: Engine, sql: str, params: dict[str, Any], want: Any, seconds: float = 15) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        with engine.connect() as conn:
            value = conn.execute(text(sql), params).scalar()
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.mqtt
@pytest.mark.postgres
def test_a_correction_reaches_the_cloud_as_edit_1_and_recomputes_the_sample(
    broker: Broker,  # noqa: F811
    cloud_db: str,  # noqa: F811
) -> None:
    from cloud.ingest import IngestOptions, IngestWorker
    from cloud.settings import CloudSettings

    settings = CloudSettings(
        database_url=cloud_db,
        mqtt_broker_url=f"mqtt://127.0.0.1:{broker.port}",
        mqtt_ingest_password=broker.ingest_password,
    )
    worker = IngestWorker(settings, IngestOptions(client_id="ingest-corrections", batch_wait_s=0.2))
    worker.start()
    engine = create_engine(cloud_db)
    acc = broker.devices[0]
    probe = MqttProbe(broker.port, acc.username, acc.password, client_id=acc.username)
    try:
        assert worker.wait_connected(10)
        probe.connect()
        topic = f"microplate/v1/{acc.site}/{acc.device}/runs"
        first = new_run(template_message(acc.site, acc.device), "S-CORR")
        probe.publish(topic, first.model_dump_json().encode())
        assert (
            _wait(engine, "SELECT edit FROM runs WHERE run_id = :id", {"id": first.run_id}, 0) == 0
        )
        with engine.connect() as conn:
            before = conn.execute(
                text("SELECT gmt FROM samples WHERE sample_number = 'S-CORR'")
            ).scalar()
        # Row A read flowing to column 5; the operator sees flowing wells up to column 7.
        edit = review_edit(first, {"A6": "flowing", "A7": "flowing"}, by="ana", at=AT)
        probe.publish(topic, edit.model_dump_json().encode())
        assert (
            _wait(engine, "SELECT edit FROM runs WHERE run_id = :id", {"id": first.run_id}, 1) == 1
        )
        with engine.connect() as conn:
            run = conn.execute(
                text("SELECT n_corrected, reviewed_at, extra FROM runs WHERE run_id = :id"),
                {"id": first.run_id},
            ).one()
            wells = conn.execute(
                text("SELECT wells FROM run_wells WHERE run_id = :id"), {"id": first.run_id}
            ).scalar_one()
            row_a = conn.execute(
                text("SELECT endpoint, titre FROM run_rows WHERE run_id = :id AND row = 0"),
                {"id": first.run_id},
            ).one()
            sample = conn.execute(
                text("SELECT gmt, distribution FROM samples WHERE sample_number = 'S-CORR'")
            ).one()
        assert run.n_corrected == 2 and run.reviewed_at == AT
        assert run.extra["review"] == {
            "by": "ana",
            "at": AT.isoformat().replace("+00:00", "Z"),
            "accepted": False,
        }
        by_id = {w["well_id"]: w for w in wells}
        assert (by_id["A6"]["model_state"], by_id["A6"]["state"]) == ("agglutinated", "flowing")
        assert (by_id["B1"]["model_state"], by_id["B1"]["state"]) == ("flowing", "flowing")
        assert (row_a.endpoint, row_a.titre) == (edit.rows[0].endpoint, edit.rows[0].titre)
        # The sample is the edited run alone: its distribution is the edit's, its GMT rose.
        assert sample.distribution == edit.distribution and sample.gmt > before
    finally:
        probe.close()
        worker.stop()
        worker.engine.dispose()
        engine.dispose()


@pytest.fixture(scope="module")
def world(
    migrated_db: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = make_settings(
        migrated_db,
        tmp_path_factory.mktemp("corrections"),
        s3_server,
        login_rate_per_minute=500,
        metrics_token=METRICS_TOKEN,
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


def _upsert(world: World, message: RunMessage, device_id: uuid.UUID) -> None:
    with world.sessions()() as session:
        device = session.get(Device, device_id)
        assert device is not None
        results.upsert_run(session, message, device=device)
        session.commit()


@pytest.mark.postgres
@pytest.mark.s3
def test_field_accuracy_per_device_site_and_model(world: World) -> None:
    a = run_message(site=world.slug_a, device="reader-1", sample_number="F-1", captured_at=AT)
    b = run_message(site=world.slug_b, device="reader-1", sample_number="F-2", captured_at=AT)
    held = run_message(
        site=world.slug_a,
        device="reader-1",
        sample_number="F-3",
        captured_at=AT - timedelta(days=8),
        review_reasons=("grid_misfit",),
    )
    for msg, dev in ((a, world.device_a), (b, world.device_b), (held, world.device_a)):
        _upsert(world, msg, dev)
    _upsert(
        world,
        review_edit(a, {"A1": "invalid", "C3": "agglutinated", "H12": "flowing"}, by="ana", at=AT),
        world.device_a,
    )
    accepted = review_edit(held, {}, by="bo", at=AT, accept=True)
    _upsert(world, accepted, world.device_a)
    with world.sessions()() as session:
        run = session.get(Run, held.run_id)
        assert run is not None and run.status == "current" and run.n_corrected == 0
        sample = session.get(Sample, run.sample_id)
        assert sample is not None and sample.n_runs == 1  # accepting it made it count
        doc = session.scalar(select(RunWell.wells).where(RunWell.run_id == a.run_id))
        assert doc is not None and sum(1 for w in doc if w["model_state"] != w["state"]) == 3
        since = (AT - timedelta(days=30)).date()
        by_site = field.field_accuracy(
            session, scope=Scope.everything(), by="site", site_id=None, since=since, until=None
        )
        mine = field.field_accuracy(
            session,
            scope=Scope(all_sites=False, site_ids=frozenset({world.site_b})),
            by="device",
            site_id=None,
            since=since,
            until=None,
        )
    series = {s["name"]: s for s in by_site["series"]}
    site_a = series["Site A"]
    assert sum(c for c in site_a["corrected"] if c) == 3
    assert sum(w for w in site_a["wells"] if w) == 2 * 96
    assert site_a["values"][-1] == round(3 / 96, 5)
    assert series["Site B"]["values"][-1] == 0.0
    # Another site's manager sees only their own devices.
    assert [s["name"] for s in mine["series"]] == ["Site B · reader-1"]

    cookie = {"Cookie": f"mp_access={world.actors['manager'].token}"}
    chart = world.client.get("/ui/charts/field-accuracy.json?by=model", headers=cookie)
    assert chart.status_code == 200 and chart.json()["series"][0]["corrected"][-1] == 3
    assert (
        world.client.get("/ui/charts/field-accuracy.json?by=x", headers=cookie).status_code == 400
    )
    page = world.client.get("/ui/review", headers=cookie)
    assert page.status_code == 200
    assert f'data-run="{a.run_id}" data-corrected="3"' in page.text and "ana" in page.text
    assert str(b.run_id) not in page.text
    metrics = world.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    line = next(
        ln
        for ln in metrics.text.splitlines()
        if ln.startswith("microplate_field_wells_corrected_30d{") and f'site="{world.slug_a}"' in ln
    )
    assert line.endswith(" 3.0"), line


@pytest.mark.postgres
@pytest.mark.s3
def test_the_training_opt_in_is_off_by_default_and_admin_only(world: World) -> None:
    path = f"/api/v1/sites/{world.site_a}"
    site = world.client.get(path, headers=world.actors["admin"].headers).json()
    assert site["allow_training"] is False
    manager = world.actors["manager"].headers
    assert (
        world.client.patch(path, json={"allow_training": True}, headers=manager).status_code == 403
    )
    resp = world.client.patch(
        path, json={"allow_training": True}, headers=world.actors["admin"].headers
    )
    assert resp.status_code == 200 and resp.json()["allow_training"] is True
    world.client.patch(path, json={"allow_training": False}, headers=world.actors["admin"].headers)


@pytest.mark.postgres
@pytest.mark.s3
def test_the_sites_page_switches_training_on_and_off(world: World) -> None:
    admin = {"Cookie": f"mp_access={world.actors['admin'].token}", "Origin": "http://testserver"}
    url = f"/ui/sites/{world.site_b}/training"
    resp = world.client.post(url, data={"allow": "on"}, headers=admin, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    page = world.client.get("/ui/sites", headers=admin).text
    assert 'data-testid="training" data-allowed="yes"' in page
    world.client.post(url, data={"allow": ""}, headers=admin, follow_redirects=False)
    site = world.client.get(f"/api/v1/sites/{world.site_b}", headers=world.actors["admin"].headers)
    assert site.json()["allow_training"] is False
    # Without the dashboard's own Origin the change is refused (CSRF).
    forged = {**admin, "Origin": "https://evil.example"}
    assert world.client.post(url, data={"allow": "on"}, headers=forged).status_code == 403
