"""A plate image through the pipeline gives the expected stored run, pooled summary and CSV."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from core.wire import RunEvent, RunMessage, parse_message
from edge.app import Appliance
from edge.db import outbox
from edge.errors import InvalidInput, NotFound
from edge.schemas import RunRequest, RuntimeSettingsPatch
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, PLATE_B, fake_detector, jpeg, plate_image

LEGACY_EXPECTED = (
    "SAMPLE_NUMBER,TEST_NUMBER,REPORTED_NAME,ENTRY\n"
    "S-001,T001,1,0\nS-001,T001,2,0\nS-001,T001,3,0\nS-001,T001,4,1\nS-001,T001,5,5\n"
    "S-001,T001,6,6\nS-001,T001,7,2\nS-001,T001,8,1\nS-001,T001,9,0\nS-001,T001,10,0\n"
    "S-001,T001,11,0\nS-001,T001,12,0\n"
    "S-001,T001,GMT,5.8\nS-001,T001,MEAN,1.25\nS-001,T001,SD,2.01\nS-001,T001,CV,1.60416126\n"
)


def submit(app: Appliance, data: bytes, name: str = "p.jpg", sample: str = "S-001") -> str:
    ticket = app.intake.submit_image(data, name, RunRequest(sample_number=sample, operator="ann"))
    state = app.intake.wait(ticket.id, timeout=30)
    assert state.state == "done", state
    assert state.run_id
    return state.run_id


def latest_csv(share: Path) -> str:
    files = sorted(share.glob("*.csv"))
    assert files, "no CSV in the share"
    return max(files, key=lambda p: p.stat().st_mtime_ns).read_text(encoding="utf-8")


@pytest.fixture
def two_plate_app(make_app: Callable[..., Appliance], make_settings: SettingsFactory) -> Appliance:
    settings = make_settings(
        detector=fake_detector(PLATE_A, PLATE_B), runtime={"csv_template": "labware-legacy"}
    )
    return make_app(settings)


def test_worked_example_gives_stored_runs_pooled_summary_and_legacy_csv(
    two_plate_app: Appliance,
) -> None:
    app = two_plate_app
    run_a = submit(app, jpeg(plate_image(PLATE_A, seed=1)), "a.jpg")
    run_b = submit(app, jpeg(plate_image(PLATE_B, seed=2)), "b.jpg")

    detail = app.runs.get_run(run_a)
    assert [r.endpoint for r in detail.rows] == PLATE_A
    assert len(detail.wells) == 96
    assert detail.wells[0].state == "flowing" and detail.wells[11].state == "agglutinated"
    assert detail.status == "current" and detail.sample_number == "S-001"
    assert detail.rows[7].flags == ["no_inhibition"]
    assert app.runs.run_image(run_a, "raw").read_bytes()[:2] == b"\xff\xd8"
    assert app.runs.run_image(run_a, "annotated").stat().st_size > 0
    assert app.runs.run_image(run_a, "thumbnail").stat().st_size > 0

    sample = app.runs.get_sample("S-001")
    assert sample.plates == 2 and {r.run_id for r in sample.runs} == {run_a, run_b}
    counts = {k: v for k, v in sample.distribution.items() if v}
    assert counts == {"0": 1, "4": 1, "5": 5, "6": 6, "7": 2, "8": 1}
    assert sample.csv is not None and not sample.csv.pending
    assert latest_csv(app.settings.share_dir) == LEGACY_EXPECTED
    assert sample.csv.file_name in {p.name for p in app.settings.share_dir.glob("*.csv")}

    entries = outbox.pending(app.store)
    assert [e.run_id for e in entries] == [run_a, run_b]
    message = parse_message(entries[0].payload_bytes())
    assert isinstance(message, RunMessage)
    assert str(message.run_id) == run_a and message.sample_number == "S-001"
    assert [r.endpoint for r in message.rows] == PLATE_A
    assert outbox.backlog(app.store)[0] == 2
    refs = {ref.role: ref for ref in message.images}
    assert set(refs) == {"raw", "annotated", "thumbnail"}
    raw = app.runs.run_image(run_a, "raw").read_bytes()
    assert refs["raw"].sha256 == hashlib.sha256(raw).hexdigest()
    assert refs["raw"].size_bytes == len(raw)
    assert refs["raw"].key == f"site-1/edge-1/{run_a}/raw.jpg"


def test_default_template_reports_correct_statistics(app: Appliance) -> None:
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    text = latest_csv(app.settings.share_dir)
    lines = dict(line.split(",")[2:4] for line in text.strip().splitlines()[1:])
    assert lines["N"] == "8"  # the no-inhibition row counts at start/2 by the safe default
    assert lines["EXCLUDED"] == "0"
    assert float(lines["GMT"]) == pytest.approx(
        app.runs.get_sample("S-001").statistics["gmt"], abs=0.01
    )
    assert app.runs.get_run(run_id).rows_counted == 8


def test_same_image_twice_is_one_run(app: Appliance) -> None:
    data = jpeg(plate_image(PLATE_A))
    first = submit(app, data)
    ticket = app.intake.submit_image(data, "again.jpg", RunRequest(sample_number="S-001"))
    assert ticket.state == "done" and ticket.run_id == first
    assert app.runs.list_runs(limit=10).total == 1
    assert app.runs.get_sample("S-001").plates == 1


def test_reread_supersedes_and_never_double_counts(app: Appliance) -> None:
    first = submit(app, jpeg(plate_image(PLATE_A)))
    before = app.runs.get_sample("S-001").distribution
    ticket = app.runs.reread(first, actor="sup")
    state = app.intake.wait(ticket.id, 30)
    assert state.state == "done" and state.run_id != first
    old, new = app.runs.get_run(first), app.runs.get_run(state.run_id)
    assert old.status == "superseded" and old.superseded_by == new.run_id
    assert new.supersedes == first and new.plate_id == old.plate_id
    sample = app.runs.get_sample("S-001")
    assert sample.plates == 1 and sample.distribution == before
    kinds = [e.kind for e in outbox.pending(app.store)]
    assert kinds == ["run", "superseded", "run"]
    event = parse_message(outbox.pending(app.store)[1].payload_bytes())
    assert isinstance(event, RunEvent) and str(event.superseded_by) == new.run_id


def test_a_capture_naming_an_earlier_plate_supersedes_it(app: Appliance) -> None:
    first = submit(app, jpeg(plate_image(PLATE_A, seed=1)))
    plate = app.runs.get_run(first).plate_id
    t = app.intake.submit_image(
        jpeg(plate_image(PLATE_A, seed=2)),  # a new photo of the same physical plate
        "again.jpg",
        RunRequest(sample_number="S-001", plate_id=plate),
    )
    second = app.intake.wait(t.id, 30).run_id
    assert second and app.runs.get_run(second).plate_id == plate
    assert app.runs.get_run(first).status == "superseded"
    assert app.runs.get_sample("S-001").plates == 1


def test_delete_recomputes_sample_and_queues_event(two_plate_app: Appliance) -> None:
    app = two_plate_app
    run_a = submit(app, jpeg(plate_image(PLATE_A, seed=1)))
    submit(app, jpeg(plate_image(PLATE_B, seed=2)))
    before = (app.settings.share_dir / "S-001.csv").read_text(encoding="utf-8")
    with pytest.raises(InvalidInput):
        app.runs.delete_run(run_a, actor="sup", reason="  ")
    app.runs.delete_run(run_a, actor="sup", reason="wrong plate")
    assert app.runs.get_run(run_a).status == "deleted"
    sample = app.runs.get_sample("S-001")
    assert sample.plates == 1
    assert sum(sample.distribution.values()) == 8
    assert [p.name for p in app.settings.share_dir.glob("*.csv")] == ["S-001.csv"]  # replaced
    assert (app.settings.share_dir / "S-001.csv").read_text(encoding="utf-8") != before
    last = outbox.pending(app.store)[-1]
    assert last.kind == "deleted" and last.run_id == run_a
    event = parse_message(last.payload_bytes())
    assert isinstance(event, RunEvent) and event.reason == "wrong plate"
    with pytest.raises(NotFound):
        app.runs.delete_run("00000000-0000-0000-0000-000000000000", actor="sup", reason="x")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"this is not an image at all", ""),
        (jpeg(plate_image(PLATE_A))[:4000], ""),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 5000, ""),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 100, ""),
    ],
    ids=["empty", "text", "truncated-jpeg", "corrupt-jpeg", "corrupt-png"],
)
def test_bad_files_fail_their_run_clearly_and_the_appliance_keeps_working(
    app: Appliance, data: bytes, needle: str
) -> None:
    try:
        ticket = app.intake.submit_image(data, "bad.jpg", RunRequest(sample_number="S-9"))
    except InvalidInput as exc:
        assert needle in exc.message.lower()
    else:
        state = app.intake.wait(ticket.id, 30)
        assert state.state == "failed" and state.error is not None
        assert state.error.code == "bad_image"
        assert "image" in state.error.message.lower()
        assert "Traceback" not in state.error.message
    assert app.runs.list_runs(limit=10).total == 0
    assert submit(app, jpeg(plate_image(PLATE_A)))  # still works


def test_bad_sample_number_is_refused(app: Appliance) -> None:
    with pytest.raises(InvalidInput) as err:
        app.intake.submit_image(
            jpeg(plate_image(PLATE_A)), "a.jpg", RunRequest(sample_number="../..")
        )
    assert err.value.code == "bad_sample_number"


def test_runtime_settings_apply_to_next_plate_and_are_audited(app: Appliance) -> None:
    new = app.runtime.update(RuntimeSettingsPatch(start_dilution=8), actor="sup")
    assert new.start_dilution == 8
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    row_a = app.runs.get_run(run_id).rows[0]
    assert row_a.titre == 8 * 2 ** (PLATE_A[0] - 1)
    audit = app.store.read().execute("SELECT actor, action FROM audit").fetchall()
    assert ("sup", "settings.update") in audit


def test_events_are_published(app: Appliance) -> None:
    sub = app.events.subscribe()
    run_id = submit(app, jpeg(plate_image(PLATE_A)))
    seen = []
    while (event := sub.get(timeout=0.5)) is not None:
        seen.append((event.type, event.payload.get("run_id")))
    assert ("run.created", run_id) in seen
    assert any(t == "capture.progress" for t, _ in seen)
    assert any(t == "sample.updated" for t, _ in seen)
    sub.close()


def test_list_runs_and_samples_paginate(app: Appliance) -> None:
    for i in range(3):
        submit(app, jpeg(plate_image(PLATE_A, seed=10 + i)), sample=f"S-{i}")
    page = app.runs.list_runs(limit=2, offset=0)
    assert page.total == 3 and len(page.items) == 2
    assert app.runs.list_runs(sample_number="S-1", limit=10).total == 1
    samples = app.runs.list_samples(query="S-", limit=10)
    assert samples.total == 3
    assert app.runs.list_samples(query="%", limit=10).total == 0  # LIKE wildcards are literal
    with pytest.raises(NotFound):
        app.runs.get_sample("nope")
    with pytest.raises(NotFound):
        app.runs.get_run("nope")
