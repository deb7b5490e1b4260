"""An operator's review through the whole appliance: each review is an edit of the run that keeps
the model's call beside the final one, recomputes rows, titres and the pooled sample in one
transaction, rewrites the sample's CSV, is audited and queued for the cloud."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from core.wire import RunMessage, parse_message
from edge.app import Appliance
from edge.db import outbox
from edge.errors import Conflict, InvalidInput, NotFound, SupervisorRequired
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.detect.wells_models import wells_dir
from tests.edge.plates import HEIGHT, MARGIN, PLATE_A, WIDTH, frame_boxes, jpeg, plate_image

GRID = CalibrationGrid.uniform(WIDTH, HEIGHT, PLATE_96, MARGIN)


def submit(app: Appliance, data: bytes, sample: str = "S-001") -> str:
    ticket = app.intake.submit_image(data, "p.jpg", RunRequest(sample_number=sample))
    state = app.intake.wait(ticket.id, timeout=30)
    assert state.state == "done" and state.run_id, state
    return state.run_id


def run_messages(app: Appliance, run_id: str) -> list[RunMessage]:
    out = []
    for entry in outbox.pending(app.store):
        if entry.kind == "run" and entry.run_id == run_id:
            msg = parse_message(entry.payload_bytes())
            assert isinstance(msg, RunMessage)
            out.append(msg)
    return out


def csv_text(app: Appliance, sample: str) -> str:
    files = sorted(app.settings.share_dir.glob(f"{sample}*.csv"))
    assert files, f"no CSV for {sample}"
    return files[-1].read_text(encoding="utf-8")


def audit_rows(app: Appliance, action: str) -> list[dict[str, Any]]:
    rows = (
        app.store.read()
        .execute("SELECT actor, detail FROM audit WHERE action = ? ORDER BY id", [action])
        .fetchall()
    )
    return [{"actor": r[0], **json.loads(r[1])} for r in rows]


def test_a_correction_is_edit_1_recomputed_everywhere(app: Appliance) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    before = app.runs.get_run(run_id)
    row_a = before.rows[0]
    assert row_a.endpoint == 5
    sample_before = app.runs.get_sample("S-001")
    csv_before = csv_text(app, "S-001")

    # A5 was read flowing (row A flows to column 5); the operator says it is agglutinated.
    after = app.review.review(
        run_id, {"A5": "agglutinated"}, accept=False, actor="operator:k1", supervisor=False
    )
    assert after.edit == 1 and after.reviewed_by == "operator:k1"
    wells = {w.well_id: w for w in after.wells}
    assert wells["A5"].state == "agglutinated" and wells["A5"].model_state == "flowing"
    assert all(w.model_state == w.state for k, w in wells.items() if k != "A5")
    assert after.rows[0].endpoint == 4 and after.rows[0].titre == row_a.titre / 2
    assert after.rows[1:] == before.rows[1:]

    sample = app.runs.get_sample("S-001")
    assert sample.distribution != sample_before.distribution
    assert sample.statistics != sample_before.statistics
    assert sample.csv is not None and not sample.csv.pending
    assert csv_text(app, "S-001") != csv_before

    sent = run_messages(app, run_id)
    assert [m.edit for m in sent] == [0, 1]
    edit = sent[-1]
    assert edit.review is not None and edit.review.by == "operator:k1"
    assert not edit.review.accepted
    assert edit.corrected_wells() == ("A5",)
    assert edit.rows[0].endpoint == 4
    assert edit.distribution == after.distribution

    [audit] = audit_rows(app, "run.review")
    assert audit["actor"] == "operator:k1" and audit["run_id"] == run_id and audit["edit"] == 1
    assert audit["wells"] == {
        "A5": {"before": "flowing", "after": "agglutinated", "model": "flowing"}
    }


def test_a_second_review_is_edit_2_and_keeps_the_models_call(app: Appliance) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    app.review.review(run_id, {"A5": "invalid"}, accept=False, actor="op", supervisor=False)
    again = app.review.review(
        run_id, {"A5": "flowing", "B1": "invalid"}, accept=False, actor="op2", supervisor=False
    )
    assert again.edit == 2
    wells = {w.well_id: w for w in again.wells}
    assert (wells["A5"].state, wells["A5"].model_state) == ("flowing", "flowing")
    assert (wells["B1"].state, wells["B1"].model_state) == ("invalid", "flowing")
    last = run_messages(app, run_id)[-1]
    assert last.edit == 2 and last.corrected_wells() == ("B1",)
    assert [a["wells"] for a in audit_rows(app, "run.review")] == [
        {"A5": {"before": "flowing", "after": "invalid", "model": "flowing"}},
        {
            "A5": {"before": "invalid", "after": "flowing", "model": "flowing"},
            "B1": {"before": "flowing", "after": "invalid", "model": "flowing"},
        },
    ]


def test_a_review_after_a_restart_builds_on_the_stored_edit(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    app = make_app(settings)
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    app.review.review(run_id, {"A5": "invalid"}, accept=False, actor="op", supervisor=False)
    app.stop()
    app = make_app(settings)
    again = app.review.review(run_id, {"C1": "invalid"}, accept=False, actor="op", supervisor=False)
    assert again.edit == 2
    wells = {w.well_id: w for w in again.wells}
    assert wells["A5"].state == "invalid" and wells["C1"].state == "invalid"


def test_bad_reviews_are_refused_and_change_nothing(app: Appliance) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    outbox_before = len(outbox.pending(app.store))
    cases: list[tuple[dict[str, str], type[Exception], str]] = [
        ({"Z9": "flowing"}, InvalidInput, "not a well id"),
        ({"I1": "flowing"}, InvalidInput, "not on this 96-well plate"),
        ({"A13": "flowing"}, InvalidInput, "not on this 96-well plate"),
        ({"A1\x00": "flowing"}, InvalidInput, "\\x00"),
        ({"A1": "unread"}, InvalidInput, "not a state a review may set"),
        ({"A1": "flow\x00ing"}, InvalidInput, "\\x00"),
        ({}, InvalidInput, "Change at least one well"),
    ]
    for wells, error, text in cases:
        with pytest.raises(error) as exc:
            app.review.review(run_id, wells, accept=False, actor="op", supervisor=False)
        assert text in str(exc.value), (wells, str(exc.value))
    with pytest.raises(NotFound):
        app.review.review(
            "00000000-0000-4000-8000-000000000000",
            {"A1": "flowing"},
            accept=False,
            actor="op",
            supervisor=False,
        )
    assert app.runs.get_run(run_id).edit == 0
    assert len(outbox.pending(app.store)) == outbox_before
    assert audit_rows(app, "run.review") == []

    app.runs.delete_run(run_id, actor="sup", reason="cracked")
    with pytest.raises(InvalidInput, match="deleted run cannot be reviewed"):
        app.review.review(run_id, {"A1": "invalid"}, accept=False, actor="op", supervisor=False)


def test_a_superseded_read_is_not_reviewed(app: Appliance) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    ticket = app.runs.reread(run_id, actor="sup")
    assert app.intake.wait(ticket.id, 30).state == "done"
    with pytest.raises(Conflict, match="review that one"):
        app.review.review(run_id, {"A1": "invalid"}, accept=False, actor="op", supervisor=False)


def test_runs_older_than_a_day_need_a_supervisor(app: Appliance) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    processed = app.runs.get_run(run_id).processed_at
    later = processed + timedelta(days=1, minutes=1)
    with pytest.raises(SupervisorRequired, match="more than a day old"):
        app.review.review(
            run_id, {"A1": "invalid"}, accept=False, actor="op", supervisor=False, now=later
        )
    inside = processed + timedelta(hours=23)
    assert (
        app.review.review(
            run_id, {"A1": "invalid"}, accept=False, actor="op", supervisor=False, now=inside
        ).edit
        == 1
    )
    done = app.review.review(
        run_id, {"A2": "invalid"}, accept=False, actor="sup", supervisor=True, now=later
    )
    assert done.edit == 2


def test_the_edit_and_the_sample_commit_together(
    app: Appliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    sample_before = app.runs.get_sample("S-001")
    from edge.db import samples

    def broken(*_: Any, **__: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(samples, "recompute_sample", broken)
    with pytest.raises(sqlite3.OperationalError):
        app.review.review(run_id, {"A5": "invalid"}, accept=False, actor="op", supervisor=False)
    monkeypatch.undo()
    run = app.runs.get_run(run_id)
    assert run.edit == 0 and all(w.model_state is None for w in run.wells)
    assert app.runs.get_sample("S-001").distribution == sample_before.distribution
    assert [m.edit for m in run_messages(app, run_id)] == [0]
    assert audit_rows(app, "run.review") == []


@pytest.fixture
def classifier_app(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory, tmp_path: Path
) -> Appliance:
    wells = wells_dir(tmp_path / "hi-wells")
    app = make_app(make_settings(detector={"type": "fake", "wells_model_dir": str(wells)}))
    app.calibration.set(GRID, actor="sup")
    return app


def test_accepting_a_held_run_makes_it_count(classifier_app: Appliance) -> None:
    app = classifier_app
    grey = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    held_id = submit(app, jpeg(grey), sample="S-HELD")
    held = app.runs.get_run(held_id)
    assert held.needs_review and held.rows_counted == 0
    assert not list(app.settings.share_dir.glob("S-HELD*.csv"))
    assert [q.run_id for q in app.review.queue()] == [held_id]

    # A correction alone keeps it held: still no CSV, the sample unchanged.
    kept = app.review.review(held_id, {"A1": "flowing"}, accept=False, actor="op", supervisor=False)
    assert kept.needs_review and kept.rows_counted == 0 and kept.edit == 1
    assert not list(app.settings.share_dir.glob("S-HELD*.csv"))

    accepted = app.review.review(held_id, {}, accept=True, actor="op", supervisor=False)
    assert not accepted.needs_review and accepted.review_reasons == []
    assert accepted.edit == 2 and accepted.rows_counted == len(accepted.rows) - sum(
        1 for r in accepted.rows if r.exclusion_reason
    )
    assert all("review" not in r.flags for r in accepted.rows)
    sample = app.runs.get_sample("S-HELD")
    assert sample.plates == 1
    assert sample.csv is not None and sample.csv.file_name
    assert list(app.settings.share_dir.glob("S-HELD*.csv"))
    last = run_messages(app, held_id)[-1]
    assert last.review is not None and last.review.accepted and not last.needs_review
    assert app.review.queue() == []


def test_the_queue_puts_held_runs_first_then_unread_rows(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory, tmp_path: Path
) -> None:
    clean = frame_boxes(PLATE_A)
    gappy = [b for i, b in enumerate(frame_boxes(PLATE_A)) if i not in (14, 15)]  # B3, B4
    wells = wells_dir(tmp_path / "hi-wells")
    detector = {"type": "fake", "frames": [clean, gappy], "min_confidence": 0.05}
    app = make_app(make_settings(detector=detector))
    first = submit(app, jpeg(plate_image(PLATE_A, seed=1)), sample="S-1")
    unread = submit(app, jpeg(plate_image(PLATE_A, seed=2)), sample="S-2")
    assert any("unread" in r.flags for r in app.runs.get_run(unread).rows)
    assert [q.run_id for q in app.review.queue()] == [unread]
    assert app.review.queue()[0].unread_rows == 1
    # With the classifier and the grid, a grey frame is held for review: it goes first.
    app.stop()
    app = make_app(make_settings(detector={"type": "fake", "wells_model_dir": str(wells)}))
    app.calibration.set(GRID, actor="sup")
    held = submit(app, jpeg(np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)), sample="S-3")
    assert [q.run_id for q in app.review.queue()] == [held, unread]
    # Reviewed, the run with unread rows leaves the queue.
    app.review.review(
        unread, {"B3": "flowing", "B4": "flowing"}, accept=False, actor="op", supervisor=False
    )
    assert [q.run_id for q in app.review.queue()] == [held]
    assert first not in [q.run_id for q in app.review.queue()]


def test_an_accepted_held_reread_replaces_the_earlier_read_in_the_sample(
    classifier_app: Appliance,
) -> None:
    app = classifier_app
    first = submit(app, jpeg(plate_image(PLATE_A)))
    assert app.runs.get_sample("S-001").plates == 1
    # The plate moved under the camera: the saved grid no longer fits, the re-read is held.
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
    held = app.runs.get_run(state.run_id)
    assert held.needs_review
    before = app.runs.get_sample("S-001")

    corrections = {f"{row}{col}": "flowing" for row in "ABCDEFGH" for col in range(1, 4)}
    accepted = app.review.review(
        held.run_id, corrections, accept=True, actor="op", supervisor=False
    )
    assert not accepted.needs_review
    after = app.runs.get_sample("S-001")
    # Still one plate: the newest read of the plate is the one that counts (core.pooling).
    assert after.plates == 1
    assert after.distribution != before.distribution
    counted = sum(1 for r in accepted.rows if r.counted)
    assert sum(after.distribution.values()) == counted


def test_a_run_whose_message_is_gone_is_refused_with_a_reason(app: Appliance) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    with app.store.write() as db:
        db.execute("DELETE FROM outbox WHERE run_id = ?", [run_id])
    with pytest.raises(Conflict, match="re-read the plate") as exc:
        app.review.review(run_id, {"A1": "invalid"}, accept=False, actor="op", supervisor=False)
    assert exc.value.code == "review_unavailable"
    assert app.runs.get_run(run_id).edit == 0
