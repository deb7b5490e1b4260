"""Both sides agree on a plate that moved to another sample, was re-read and was deleted.

A real appliance (fake detector) syncs through Mosquitto to the real ingest worker and
Postgres. After each step, and once its outbox is empty, every sample's figures on the
appliance equal the cloud's (issue 16 points 2 and 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.edge.plates import PLATE_A, PLATE_B, fake_detector, jpeg, plate_image
from tests.sync.conftest import Broker, ingest_worker
from tests.sync.world import sync_settings

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.timeout(180)]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def ingest(broker: Broker, cloud_db: str) -> Iterator[object]:
    with ingest_worker(broker, cloud_db, "ingest-moved", batch_wait_s=0.02) as worker:
        yield worker


def cloud_samples(url: str, site: str) -> dict[str, dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT smp.sample_number, smp.n_plates, smp.distribution, smp.summary "
                    "FROM samples smp JOIN sites s ON s.id = smp.site_id WHERE s.slug = :site"
                ),
                {"site": site},
            )
            return {
                r[0]: {
                    "plates": r[1],
                    "distribution": r[2],
                    "statistics": r[3]["statistics"],
                }
                for r in rows
            }
    finally:
        engine.dispose()


def test_both_sides_show_the_same_numbers(
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

    def done(ticket_id: str) -> str:
        state = app.intake.wait(ticket_id, 30)
        assert state.state == "done" and state.run_id, state
        return state.run_id

    def capture(sample: str, seed: int, plate_id: str | None = None) -> str:
        req = RunRequest(sample_number=sample, plate_id=plate_id)
        data = jpeg(plate_image(PLATE_A, seed=seed))
        return done(app.intake.submit_image(data, f"{seed}.jpg", req).id)

    def agree(expected: dict[str, int]) -> None:
        wait_for(lambda: outbox.backlog(app.store)[0] == 0, 30, "an empty outbox")
        cloud = cloud_samples(cloud_db, acc.site)
        for sample, plates in expected.items():
            edge = app.runs.get_sample(sample)
            assert edge.plates == plates, (sample, "edge")
            assert cloud[sample]["plates"] == plates, (sample, "cloud")
            assert cloud[sample]["distribution"] == edge.distribution, sample
            assert cloud[sample]["statistics"] == edge.statistics, sample

    try:
        first = capture("S1", seed=1)
        capture("S1", seed=2)
        agree({"S1": 2})
        # The operator fixes a mistyped sample number: the plate moves to S2.
        moved = capture("S2", seed=3, plate_id=app.runs.get_run(first).plate_id)
        agree({"S1": 1, "S2": 1})
        again = done(app.runs.reread(moved, actor="sup").id)
        agree({"S1": 1, "S2": 1})
        app.runs.delete_run(again, actor="sup", reason="cracked plate")
        agree({"S1": 1, "S2": 0})
    finally:
        app.stop()
