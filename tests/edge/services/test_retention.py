"""Retention: the keep/delete decision is pure; only acknowledged runs are touched."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from edge.app import Appliance
from edge.db import outbox
from edge.schemas import RunRequest
from edge.services import retention
from edge.services.retention import Candidate, select_runs
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, jpeg, plate_image

NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def cand(
    run_id: str, age_days: float, acked: bool = True, current: bool = True, size: int = 100
) -> Candidate:
    return Candidate(run_id, NOW - age_days * DAY, size, acked, current)


def test_old_acknowledged_runs_go_unacknowledged_never() -> None:
    runs = [cand("old", 400), cand("old-unacked", 500, acked=False), cand("new", 1)]
    assert select_runs(
        runs, now=NOW, max_age=365 * DAY, free_bytes=10**9, floor_bytes=0, limit=100
    ) == ["old"]


def test_disk_floor_frees_superseded_first_then_oldest() -> None:
    runs = [cand("a", 10), cand("b", 5, current=False), cand("c", 3), cand("d", 1, acked=False)]
    chosen = select_runs(
        runs, now=NOW, max_age=365 * DAY, free_bytes=50, floor_bytes=220, limit=100
    )
    assert chosen == ["b", "a"]  # 50 + 100 + 100 >= 220
    everything = select_runs(
        runs, now=NOW, max_age=365 * DAY, free_bytes=0, floor_bytes=10**9, limit=100
    )
    assert "d" not in everything and len(everything) == 3
    assert (
        len(select_runs(runs, now=NOW, max_age=0 * DAY, free_bytes=0, floor_bytes=0, limit=2)) == 2
    )


def test_run_once_prunes_images_of_current_runs_and_keeps_their_numbers(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    app = make_app(make_settings(retention={"disk_floor_mb": 1, "max_age_days": 1}))
    t1 = app.intake.submit_image(
        jpeg(plate_image(PLATE_A, 1)), "a.jpg", RunRequest(sample_number="R")
    )
    run1 = app.intake.wait(t1.id, 30).run_id
    assert run1
    t2 = app.runs.reread(run1, actor="s")
    run2 = app.intake.wait(t2.id, 30).run_id
    assert run2
    with app.store.write() as db:  # age both runs past max_age
        db.execute("UPDATE runs SET processed_at = '2020-01-01T00:00:00+00:00'")
    assert retention.run_once(app, app.health.disk.floor_bytes) == []  # nothing acknowledged yet
    ids = [e.id for e in outbox.pending(app.store)]
    outbox.mark_delivered(app.store, ids)
    before = app.runs.get_sample("R").distribution
    removed = retention.run_once(app, app.health.disk.floor_bytes)
    assert set(removed) == {run1, run2}
    assert [r.run_id for r in app.runs.list_runs(limit=10).items] == [run2]  # superseded one gone
    assert app.runs.get_sample("R").distribution == before
    assert not (app.settings.resolved_images_dir / run2).exists()
    assert app.store.check() == []
