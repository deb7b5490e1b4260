"""An operator's correction reaches the cloud as edit 1, its sample recomputed on both sides;
accepting a held run makes it count on both sides.

A real appliance (fake detector) syncs through Mosquitto to the real ingest worker and
Postgres. After the review, and once the outbox is empty, the cloud holds edit 1 of the run with
the model's call beside the corrected well, and the sample's figures equal the appliance's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.edge.plates import PLATE_A, PLATE_B, fake_detector, jpeg, plate_image
from tests.sync.conftest import Broker
from tests.sync.test_moved_plate import cloud_samples, wait_for
from tests.sync.world import sync_settings

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.timeout(180)]


@pytest.fixture
def ingest(broker: Broker, cloud_db: str) -> Iterator[object]:
    from cloud.ingest import IngestOptions, IngestWorker
    from cloud.settings import CloudSettings

    settings = CloudSettings(
        database_url=cloud_db,
        mqtt_broker_url=f"mqtt://127.0.0.1:{broker.port}",
        mqtt_ingest_password=broker.ingest_password,
    )
    worker = IngestWorker(settings, IngestOptions(client_id="ingest-review", batch_wait_s=0.02))
    worker.start()
    assert worker.wait_connected(10)
    yield worker
    worker.stop()
    worker.engine.dispose()


def cloud_run(url: str, run_id: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT r.edit, r.status, r.n_corrected, r.reviewed_at, w.wells, r.extra "
                    "FROM runs r JOIN run_wells w ON w.run_id = r.run_id "
                    "WHERE r.run_id = :id"
                ),
                {"id": run_id},
            ).one()
            rows = conn.execute(
                text("SELECT row, endpoint, titre FROM run_rows WHERE run_id = :id ORDER BY row"),
                {"id": run_id},
            ).all()
            return {
                "edit": row[0],
                "status": row[1],
                "n_corrected": row[2],
                "reviewed_at": row[3],
                "wells": {w["well_id"]: w for w in row[4]},
                "review": row[5].get("review"),
                "rows": [tuple(r) for r in rows],
            }
    finally:
        engine.dispose()


def test_an_operator_correction_reaches_the_cloud_as_edit_1(
    broker: Broker, cloud_db: str, ingest: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.app import Appliance
    from edge.config import EdgeSettings
    from edge.db import outbox
    from edge.schemas import RunRequest

    for key in list(__import__("os").environ):
        if key.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(key)
    acc = broker.devices[0]
    settings = EdgeSettings(
        data_dir=tmp_path / "data",
        share_dir=tmp_path / "share",
        detector=fake_detector(PLATE_A, PLATE_B),
        retention={"disk_floor_mb": 1},
        site_id=acc.site,
        device_id=acc.device,
        sync=sync_settings(broker.port, acc, upload_images=()).model_dump(),
    )
    app = Appliance(settings)
    app.start()

    def capture(sample: str, seed: int) -> str:
        req = RunRequest(sample_number=sample)
        ticket = app.intake.submit_image(jpeg(plate_image(PLATE_A, seed=seed)), f"{seed}.jpg", req)
        state = app.intake.wait(ticket.id, 30)
        assert state.state == "done" and state.run_id, state
        return state.run_id

    def agree(sample: str) -> dict[str, Any]:
        wait_for(lambda: outbox.backlog(app.store)[0] == 0, 30, "an empty outbox")
        cloud = cloud_samples(cloud_db, acc.site)[sample]
        edge = app.runs.get_sample(sample)
        assert cloud["plates"] == edge.plates
        assert cloud["distribution"] == edge.distribution
        assert cloud["statistics"] == edge.statistics
        return cloud

    try:
        run_id = capture("S-REV", seed=1)
        capture("S-REV", seed=2)
        before = agree("S-REV")
        assert cloud_run(cloud_db, run_id)["edit"] == 0

        # Row A of PLATE_A flows to column 5; the operator marks A5 agglutinated.
        reviewed = app.review.review(
            run_id,
            {"A5": "agglutinated"},
            accept=False,
            actor="operator:kiosk",
            supervisor=False,
            reviewer="Ann Lée",  # the name typed on the screen travels with the review
        )
        assert reviewed.edit == 1 and reviewed.rows[0].endpoint == 4
        after = agree("S-REV")
        assert after["distribution"] != before["distribution"]
        assert after["statistics"] != before["statistics"]

        cloud = cloud_run(cloud_db, run_id)
        assert cloud["edit"] == 1 and cloud["status"] == "current"
        assert cloud["n_corrected"] == 1 and cloud["reviewed_at"] is not None
        assert cloud["review"]["by"] == "Ann Lée (operator:kiosk)"
        assert cloud["wells"]["A5"]["state"] == "agglutinated"
        assert cloud["wells"]["A5"]["model_state"] == "flowing"
        assert cloud["wells"]["A4"]["model_state"] == cloud["wells"]["A4"]["state"] == "flowing"
        edge_rows = [(r.row, r.endpoint, r.titre) for r in reviewed.rows]
        assert cloud["rows"] == edge_rows
    finally:
        app.stop()


def test_accepting_a_held_run_makes_it_count_on_both_sides(
    broker: Broker, cloud_db: str, ingest: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from core.calibration import CalibrationGrid
    from core.plate import PLATE_96
    from edge.app import Appliance
    from edge.config import EdgeSettings
    from edge.db import outbox
    from edge.schemas import RunRequest
    from tests.edge.detect.wells_models import wells_dir
    from tests.edge.plates import HEIGHT, MARGIN, WIDTH

    for key in list(__import__("os").environ):
        if key.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(key)
    acc = broker.devices[0]
    wells = wells_dir(tmp_path / "hi-wells")
    settings = EdgeSettings(
        data_dir=tmp_path / "data",
        share_dir=tmp_path / "share",
        detector={"type": "fake", "wells_model_dir": str(wells)},
        retention={"disk_floor_mb": 1},
        site_id=acc.site,
        device_id=acc.device,
        sync=sync_settings(broker.port, acc, upload_images=()).model_dump(),
    )
    app = Appliance(settings)
    app.start()
    try:
        app.calibration.set(CalibrationGrid.uniform(WIDTH, HEIGHT, PLATE_96, MARGIN), actor="sup")
        grey = jpeg(np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8))
        ticket = app.intake.submit_image(grey, "grey.jpg", RunRequest(sample_number="S-HOLD"))
        state = app.intake.wait(ticket.id, 30)
        assert state.state == "done" and state.run_id, state
        run_id = state.run_id
        assert app.runs.get_run(run_id).needs_review
        wait_for(lambda: outbox.backlog(app.store)[0] == 0, 30, "an empty outbox")
        assert cloud_run(cloud_db, run_id)["status"] == "needs_review"

        accepted = app.review.review(
            run_id, {}, accept=True, actor="operator:kiosk", supervisor=False
        )
        assert not accepted.needs_review and accepted.edit == 1
        wait_for(lambda: outbox.backlog(app.store)[0] == 0, 30, "an empty outbox")
        cloud = cloud_run(cloud_db, run_id)
        assert cloud["edit"] == 1 and cloud["status"] == "current"
        assert cloud["review"]["accepted"] is True and cloud["n_corrected"] == 0
        edge = app.runs.get_sample("S-HOLD")
        sample = cloud_samples(cloud_db, acc.site)["S-HOLD"]
        assert edge.plates == sample["plates"] == 1
        assert sample["distribution"] == edge.distribution
        assert sample["statistics"] == edge.statistics
    finally:
        app.stop()
