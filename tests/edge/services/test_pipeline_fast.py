"""The fast path's guarantees: display images committed with the run and written afterwards
(also after a crash in between), the CSV staged alongside the commit and published only after
it, and nothing left behind by a plate that does not become a run."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.wire import RunMessage, parse_message
from edge.app import Appliance
from edge.db import outbox
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, jpeg, plate_image


def submit(app: Appliance, data: bytes, name: str = "p.jpg") -> Any:
    ticket = app.intake.submit_image(data, name, RunRequest(sample_number="S-001", operator="ann"))
    return app.intake.wait(ticket.id, timeout=30)


def image_refs(app: Appliance, run_id: str) -> dict[str, tuple[str, str, int]]:
    for entry in outbox.pending(app.store, 100):
        msg = parse_message(entry.payload_bytes())
        if isinstance(msg, RunMessage) and str(msg.run_id) == run_id:
            return {
                ref.role: (
                    str(ref.key).rsplit("/", 1)[-1],
                    str(ref.sha256),
                    int(ref.size_bytes or 0),
                )
                for ref in msg.images
            }
    raise AssertionError(f"no outbox message for run {run_id}")


def pending_rows(settings_db: Path) -> int:
    db = sqlite3.connect(settings_db)
    try:
        return int(db.execute("SELECT COUNT(*) FROM pending_images").fetchone()[0])
    finally:
        db.close()


def test_display_images_left_pending_by_a_crash_are_written_on_start(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    app = make_app(settings)
    # The background writer never runs: as if the process died right after the commit.
    app.intake.pipeline.image_writer.submit = lambda run_id: None  # type: ignore[method-assign]
    state = submit(app, jpeg(plate_image(PLATE_A, seed=3)))
    assert state.state == "done", state
    folder = app.settings.resolved_images_dir / state.run_id
    assert {p.name for p in folder.iterdir()} == {"raw.jpg"}
    refs = image_refs(app, state.run_id)
    app.stop()
    assert pending_rows(settings.resolved_db_path) == 2

    again = make_app(settings)
    assert {p.name for p in folder.iterdir()} == {"raw.jpg", "annotated.jpg", "thumbnail.jpg"}
    for _role, (name, sha, size) in refs.items():
        blob = (folder / name).read_bytes()
        assert (hashlib.sha256(blob).hexdigest(), len(blob)) == (sha, size)
    assert pending_rows(settings.resolved_db_path) == 0
    assert again.runs.run_image(state.run_id, "annotated") == folder / "annotated.jpg"


def test_a_pending_display_image_is_written_when_asked_for(app: Appliance) -> None:
    app.intake.pipeline.image_writer.submit = lambda run_id: None  # type: ignore[method-assign]
    state = submit(app, jpeg(plate_image(PLATE_A, seed=4)))
    path = app.runs.run_image(state.run_id, "thumbnail")
    name, sha, size = image_refs(app, state.run_id)["thumbnail"]
    assert path.name == name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha and path.stat().st_size == size


def test_images_written_by_the_background_writer_match_the_message(app: Appliance) -> None:
    state = submit(app, jpeg(plate_image(PLATE_A, seed=5)))
    app.intake.pipeline.image_writer.drain()
    folder = app.settings.resolved_images_dir / state.run_id
    for name, sha, size in image_refs(app, state.run_id).values():
        blob = (folder / name).read_bytes()
        assert (hashlib.sha256(blob).hexdigest(), len(blob)) == (sha, size)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_commit_that_fails_after_the_csv_was_staged_leaves_nothing(
    app: Appliance, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stage = app.runs.exporter.stage
    staged: list[Any] = []

    def stage_then_doom_the_commit(*args: Any) -> Any:
        out = real_stage(*args)
        assert out is not None  # the hidden CSV is being written in the share
        staged.append(out)
        # A row that breaks a deferred foreign key: the COMMIT itself fails.
        db = app.store._db()
        db.execute("PRAGMA defer_foreign_keys = ON")
        db.execute("INSERT INTO pending_images (run_id, name, data) VALUES ('none', 'x', x'00')")
        return out

    monkeypatch.setattr(app.runs.exporter, "stage", stage_then_doom_the_commit)
    state = submit(app, jpeg(plate_image(PLATE_A, seed=6)))
    assert state.state == "failed" and staged
    assert list(app.settings.share_dir.iterdir()) == [], (
        "a CSV (or its temp file) of an uncommitted run"
    )
    assert [p for p in app.settings.resolved_images_dir.iterdir() if p.is_dir()] == []
    assert app.store.read().execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0

    monkeypatch.setattr(app.runs.exporter, "stage", real_stage)
    state = submit(app, jpeg(plate_image(PLATE_A, seed=7)))
    assert state.state == "done"
    assert len(list(app.settings.share_dir.glob("*.csv"))) == 1


def test_a_plate_that_fails_to_read_leaves_no_image_folder(app: Appliance) -> None:
    good = jpeg(plate_image(PLATE_A, seed=8))
    state = submit(app, good[: len(good) // 2], "cut.jpg")  # truncated: fails at decode
    assert state.state == "failed"
    assert list(app.settings.resolved_images_dir.iterdir()) == []


def test_a_csv_that_cannot_be_staged_is_written_by_the_retry(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(mode="development")
    app = make_app(settings)
    share = settings.share_dir
    share.rename(tmp_path / "unmounted")  # the share is gone: the run must still commit
    state = submit(app, jpeg(plate_image(PLATE_A, seed=9)))
    assert state.state == "done"
    (tmp_path / "unmounted").rename(share)
    assert app.runs.exporter.export_dirty() == 1
    assert len(list(share.glob("*.csv"))) == 1
