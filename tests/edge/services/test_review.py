"""A read the plate-quality gate holds for review, through the whole appliance: stored and shown,
no row counted, no CSV written, supersedes nothing, queued for the cloud with its status."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from core.wire import RunMessage, parse_message
from edge.app import Appliance
from edge.db import outbox
from edge.db.store import SCHEMA_VERSION, Store
from edge.schemas import RunRequest, RuntimeSettingsPatch
from tests.edge.conftest import SettingsFactory
from tests.edge.detect.wells_models import wells_dir
from tests.edge.plates import HEIGHT, MARGIN, PLATE_A, WIDTH, jpeg, plate_image


def submit(app: Appliance, data: bytes, sample: str = "S-001") -> str:
    ticket = app.intake.submit_image(
        data, "p.jpg", RunRequest(sample_number=sample, operator="ann")
    )
    state = app.intake.wait(ticket.id, timeout=30)
    assert state.state == "done", state
    assert state.run_id
    return state.run_id


def share_state(share: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in share.glob("*.csv")}


GRID = CalibrationGrid.uniform(WIDTH, HEIGHT, PLATE_96, MARGIN)


@pytest.fixture
def app(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory, tmp_path: Path
) -> Appliance:
    wells = wells_dir(tmp_path / "hi-wells")
    settings = make_settings(detector={"type": "fake", "wells_model_dir": str(wells)})
    app = make_app(settings)
    app.calibration.set(GRID, actor="sup")
    return app


def last_run_message(app: Appliance) -> RunMessage:
    entry = [e for e in outbox.pending(app.store) if e.kind == "run"][-1]
    msg = parse_message(entry.payload_bytes())
    assert isinstance(msg, RunMessage)
    return msg


def test_a_held_read_is_stored_and_shown_but_changes_nothing(app: Appliance) -> None:
    assert app.reading.wells is not None
    first = submit(app, jpeg(plate_image(PLATE_A)))
    clean = app.runs.get_run(first)
    assert not clean.needs_review and clean.rows_counted == 8
    assert clean.model.get("reading") == "tilted" and clean.reading == "tilted"
    clean_msg = last_run_message(app)
    assert not clean_msg.needs_review and clean_msg.reading == "tilted"
    # The threshold that decided the calls travels with them: the classifier's well threshold.
    assert clean_msg.min_confidence == app.runtime.get().well_threshold == 0.5
    share = app.settings.share_dir
    before_csv = share_state(share)
    assert before_csv, "the clean read wrote the sample's CSV"
    before = app.runs.get_sample("S-001")

    grey = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    held_id = submit(app, jpeg(grey))
    held = app.runs.get_run(held_id)
    assert held.needs_review and "not_a_plate" in held.review_reasons
    assert held.status == "current" and held.rows_counted == 0 and len(held.rows) == 8
    assert all("review" in r.flags and not r.counted for r in held.rows)
    assert app.runs.get_run(first).status == "current"  # the clean read still stands
    after = app.runs.get_sample("S-001")
    assert (after.plates, after.rows_total, after.distribution) == (
        before.plates,
        before.rows_total,
        before.distribution,
    )
    assert share_state(share) == before_csv  # no LabWare CSV for the held read
    listed = {r.run_id: r for r in app.runs.list_runs(limit=10).items}
    assert listed[held_id].needs_review and listed[held_id].review_reasons == held.review_reasons
    msg = last_run_message(app)
    assert msg.run_id.hex == held_id.replace("-", "")
    assert msg.needs_review and "not_a_plate" in msg.review_reasons
    assert not any(r.counted for r in msg.rows)
    # The fleet's alert on the share of held plates reads this counter.
    text = generate_latest(app.metrics.registry).decode()
    assert 'microplate_runs_total{status="done"} 1.0' in text
    assert 'microplate_runs_total{status="needs_review"} 1.0' in text


def test_status_names_the_classifier(app: Appliance) -> None:
    status = app.health.status()
    assert status.classifier is not None
    assert status.classifier["name"] == "test-wells" and status.classifier["backend"] == "onnx"
    assert status.classifier["precision"] == "int8"  # auto, on the CPU


def test_a_held_reread_supersedes_nothing(app: Appliance) -> None:
    first = submit(app, jpeg(plate_image(PLATE_A)))
    before_csv = share_state(app.settings.share_dir)
    # The plate moved under the camera: the saved grid no longer fits its wells.
    half = (GRID.columns[1] - GRID.columns[0]) / 2
    moved = CalibrationGrid(
        columns=tuple(x + half for x in GRID.columns),
        rows=GRID.rows,
        image_width=WIDTH + 100,
        image_height=HEIGHT,
    )
    app.calibration.set(moved.scaled(WIDTH, HEIGHT), actor="sup")
    ticket = app.runs.reread(first, actor="sup")
    state = app.intake.wait(ticket.id, 30)
    assert state.state == "done" and state.run_id
    again = app.runs.get_run(state.run_id)
    assert again.needs_review and again.rows_counted == 0
    old = app.runs.get_run(first)
    assert old.status == "current" and old.superseded_by is None
    assert [e.kind for e in outbox.pending(app.store)] == ["run", "run"]
    assert last_run_message(app).supersedes is None
    assert share_state(app.settings.share_dir) == before_csv
    assert app.runs.get_sample("S-001").plates == 1


def test_reading_mode_is_a_runtime_setting_and_the_calibration_wins(app: Appliance) -> None:
    app.runtime.update(RuntimeSettingsPatch(reading="untilted"), actor="sup")
    run = app.runs.get_run(submit(app, jpeg(plate_image(PLATE_A))))
    assert run.reading == "untilted"
    app.calibration.set(GRID.model_copy(update={"reading": "tilted"}), actor="sup")
    run = app.runs.get_run(submit(app, jpeg(plate_image([1] * 8)), sample="S-002"))
    assert run.reading == "tilted"


def test_migration_3_keeps_older_runs_counted(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = Store(path)
    store.open()
    store.migrate()
    assert store.version == SCHEMA_VERSION == 3
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.executescript(
        "DROP INDEX runs_review; ALTER TABLE runs DROP COLUMN reading; "
        "ALTER TABLE runs DROP COLUMN review_reasons; ALTER TABLE runs DROP COLUMN needs_review;"
    )
    conn.commit()
    conn.close()
    store = Store(path)
    store.open()
    assert store.migrate() == ["plate-quality gate: needs_review, review_reasons, reading"]
    cols = {r[1] for r in store.read().execute("PRAGMA table_info(runs)").fetchall()}
    assert {"needs_review", "review_reasons", "reading"} <= cols
    store.close()


def test_a_sample_seen_only_through_held_reads_is_listed_without_a_csv(app: Appliance) -> None:
    held = submit(app, jpeg(np.full((HEIGHT, WIDTH, 3), 90, np.uint8)), sample="S-HELD")
    sample = app.runs.get_sample("S-HELD")
    assert sample.plates == 0 and sample.rows_total == 0
    assert [r.run_id for r in sample.runs] == [held] and sample.runs[0].needs_review
    assert sample.csv is not None and not sample.csv.pending
    assert not any(p.name.startswith("S-HELD") for p in app.settings.share_dir.glob("*.csv"))
