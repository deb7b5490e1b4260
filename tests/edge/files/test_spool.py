"""Uploads are spooled to disk before their ticket is handed out, and replayed after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from uuid import uuid4

from edge.app import Appliance
from edge.files.fsutil import tmp_name_for
from edge.files.spool import Spool
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, fake_detector

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def test_spool_round_trip_and_leftovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    req = RunRequest(sample_number="S-1", operator="ann", plate_id=uuid4())
    spool.put("t1", b"\xff\xd8image", req=req, filename="a.jpg", source="upload", captured_at=NOW)
    partial = tmp_name_for(spool.path("t2"))
    partial.write_bytes(b"half")  # a write cut short by a crash, or one still going on
    (spool.folder / "t3.plate").write_bytes(b"\x00\x00\xff\xffnot json")  # a damaged file
    [entry] = spool.entries()
    assert (entry.ticket_id, entry.req, entry.filename, entry.data) == (
        "t1",
        req,
        "a.jpg",
        b"\xff\xd8image",
    )
    assert entry.captured_at == NOW
    # A partial file is not an entry, and reading entries never deletes it: it may be a capture
    # that is still being written (the replay worker lists entries every few seconds).
    assert sorted(p.name for p in spool.folder.iterdir()) == [
        partial.name,
        "t1.plate",
        "t3.damaged",
    ]
    spool.remove("t1")
    assert spool.entries() == []


def test_start_removes_spool_leftovers_and_replay_leaves_writes_in_flight(
    make_settings: SettingsFactory, make_app: Callable[..., Appliance]
) -> None:
    settings = make_settings()
    spool = Spool(settings.data_dir / "spool")
    spool.folder.mkdir(parents=True)
    leftover = tmp_name_for(spool.path("crashed"))
    leftover.write_bytes(b"half")  # cut short by a crash before this start
    app = make_app(settings)
    assert not leftover.exists()
    in_flight = tmp_name_for(app.intake.spool.path("writing"))
    in_flight.write_bytes(b"still being written")
    app.intake.replay_spool()
    assert in_flight.read_bytes() == b"still being written"


def test_finished_plates_leave_the_spool(app: Appliance) -> None:
    from tests.edge.plates import jpeg, plate_image

    t = app.intake.submit_image(jpeg(plate_image(PLATE_A)), "a.jpg", RunRequest(sample_number="S"))
    assert app.intake.wait(t.id, 30).state == "done"
    bad = app.intake.submit_image(b"garbage", "b.jpg", RunRequest(sample_number="S"))
    assert app.intake.wait(bad.id, 30).state == "failed"
    deadline = time.monotonic() + 5
    while list(app.intake.spool.folder.glob("*.plate")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(app.intake.spool.folder.glob("*.plate"))


def test_uploads_accepted_before_a_kill_are_processed_after_restart(
    make_settings: SettingsFactory, make_app: Callable[..., Appliance], tmp_path: Path
) -> None:
    settings = make_settings(detector=fake_detector(PLATE_A))
    config = tmp_path / "settings.json"
    config.write_text(settings.model_dump_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_EDGE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.edge.upload_child", str(config), "4"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    tickets = []
    for line in proc.stdout:
        if line.strip() == "QUEUED":
            break
        tickets.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    assert len(tickets) == 4
    assert len(list((settings.data_dir / "spool").glob("*.plate"))) == 4

    app = make_app(settings)  # the restart
    states = [app.intake.wait(t, 30) for t in tickets]  # the same ticket ids answer again
    assert [s.state for s in states] == ["done"] * 4
    assert app.runs.get_sample("U-1").plates == 4
    deadline = time.monotonic() + 5
    while list(app.intake.spool.folder.glob("*.plate")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(app.intake.spool.folder.glob("*.plate"))
