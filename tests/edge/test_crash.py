"""SIGKILL at random points while 20 plates go through the watched folder.

Afterwards: the database passes integrity_check, no run is half-written, no CSV is half-written
(or visible under a temp name after a start), and every image is a complete run exactly once:
processed again after a crash if it was not committed, never counted twice if it was.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.labware import render_csv_bytes
from core.pooling import SampleSummary
from tests.edge.plates import PLATE_B, fake_detector, jpeg, plate_image

ROOT = Path(__file__).resolve().parents[2]
N_PLATES = 20
SAMPLES = 4


def start_child(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPLATE_EDGE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.edge.crash_child", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    assert line.strip() == "READY" and time.monotonic() < deadline, line


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    if proc.stdout:
        proc.stdout.close()


@pytest.mark.slow
def test_random_sigkills_lose_and_corrupt_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shas = set()
    for i in range(N_PLATES):
        data = jpeg(plate_image(PLATE_B, seed=i))
        shas.add(hashlib.sha256(data).hexdigest())
        (inbox / f"K-{i % SAMPLES}__p{i:02d}.jpg").write_bytes(data)
    settings = {
        "data_dir": str(tmp_path / "data"),
        "share_dir": str(tmp_path / "share"),
        "detector": fake_detector(PLATE_B),
        "retention": {"disk_floor_mb": 1},
        "capture": {"type": "folder", "inbox": str(inbox), "stable_s": 0.0, "poll_s": 0.05},
    }
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(settings))

    processed = inbox / "processed"

    def done() -> int:
        return len(list(processed.glob("*.jpg"))) if processed.is_dir() else 0

    kills = 0
    for _ in range(80):
        if not list(inbox.glob("*.jpg")):
            break
        proc = start_child(config)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 1.0))  # sometimes during start-up and migration
        else:
            wait_ready(proc)
            # Let 0 or 1 plate finish, then kill somewhere inside the next one: progress-
            # driven, so a fast or a loaded machine gets about the same number of kills.
            target, deadline = done() + rng.randint(0, 1), time.monotonic() + 30
            while done() < target and list(inbox.glob("*.jpg")) and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.08))
        kill(proc)
        kills += 1
    assert kills >= 6, f"only {kills} kills"  # typically 10-13 on an idle machine, more if loaded
    # Plant a partial CSV as a crash mid-write would leave it; a start must remove it.
    (tmp_path / "share").mkdir(exist_ok=True)
    (tmp_path / "share" / ".K-0_x.csv.partial-dead").write_text("SAMPLE_NUMBER,TE")

    proc = start_child(config)  # a last clean run finishes whatever is left
    wait_ready(proc)
    deadline = time.monotonic() + 60
    while list(inbox.glob("*.jpg")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    kill(proc)
    proc = start_child(config)  # one more start: cleans anything the kill above left
    wait_ready(proc)
    time.sleep(0.5)
    kill(proc)

    assert not list(inbox.glob("*.jpg")), "some images were never processed"
    assert len(list((inbox / "processed").glob("*.jpg"))) == N_PLATES
    assert not list((inbox / "failed").glob("*.jpg"))

    db = sqlite3.connect(tmp_path / "data" / "microplate.db")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    runs = db.execute("SELECT run_id, image_sha256, image_dir, sample_number FROM runs").fetchall()
    assert {r[1] for r in runs} == shas and len(runs) == N_PLATES  # each image exactly once
    for run_id, _, image_dir, _ in runs:
        assert db.execute("SELECT COUNT(*) FROM wells WHERE run_id=?", [run_id]).fetchone() == (96,)
        assert db.execute("SELECT COUNT(*) FROM rows WHERE run_id=?", [run_id]).fetchone() == (8,)
        assert db.execute(
            "SELECT COUNT(*) FROM outbox WHERE run_id=? AND kind='run'", [run_id]
        ).fetchone() == (1,)
        folder = tmp_path / "data" / "images" / image_dir
        assert {p.name for p in folder.iterdir()} == {"raw.jpg", "annotated.jpg", "thumbnail.jpg"}
    on_disk = {p.name for p in (tmp_path / "data" / "images").iterdir()}
    assert on_disk == {r[2] for r in runs}, "orphan or partial image folders remain"

    share = tmp_path / "share"
    assert not [p for p in share.iterdir() if p.name.startswith(".")], "temp files left"
    for sample, summary_json, dirty, plates in db.execute(
        "SELECT sample_number, summary, csv_dirty, plates FROM samples"
    ).fetchall():
        assert plates == N_PLATES // SAMPLES and dirty == 0
        summary = SampleSummary.model_validate_json(summary_json)
        files = sorted(share.glob(f"{sample}.csv"))  # share.naming per_sample: one file
        assert files, f"no CSV for {sample}"
        for f in files:  # every CSV ever written is whole
            rows = list(csv.reader(io.StringIO(f.read_text(encoding="utf-8"))))
            assert len(rows) == 1 + 12 + 6 and rows[-1][2] == "EXCLUDED"
        assert files[-1].read_bytes() == render_csv_bytes(summary, template="labware")
    db.close()
