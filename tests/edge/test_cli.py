"""`microplate-edge` commands: clear messages and exit codes, never a traceback for user errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from core.calibration import CalibrationGrid
from edge.app import Appliance
from edge.cli import build_parser, main
from edge.config import EdgeSettings
from edge.schemas import RunRequest
from tests.edge.plates import PLATE_A, PLATE_B, fake_detector, jpeg, plate_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MICROPLATE_EDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MICROPLATE_EDGE_SHARE_DIR", str(tmp_path / "share"))
    monkeypatch.setenv("MICROPLATE_EDGE_DETECTOR", json.dumps(fake_detector(PLATE_A)))
    monkeypatch.setenv("MICROPLATE_EDGE_RETENTION__DISK_FLOOR_MB", "1")
    # `--config` sets this in os.environ; registering it here restores it after each test.
    monkeypatch.setenv("MICROPLATE_EDGE_CONFIG_FILE", "")
    return tmp_path


def test_validate_config_names_the_bad_key(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-config"]) == 0
    monkeypatch.setenv("MICROPLATE_EDGE_QUEUE_SIZE", "0")
    assert main(["validate-config"]) == 2
    assert "queue_size" in capsys.readouterr().err
    monkeypatch.delenv("MICROPLATE_EDGE_QUEUE_SIZE")
    cfg = env / "c.json"
    cfg.write_text(json.dumps({"capture": {"type": "folder", "inbox": "x", "stabel_s": 1}}))
    assert main(["--config", str(cfg), "validate-config"]) == 2
    assert "capture.folder.stabel_s" in capsys.readouterr().err
    monkeypatch.setenv("MICROPLATE_EDGE_CONFIG_FILE", "")
    monkeypatch.setenv("MICROPLATE_EDGE_DETECTOR", '{"type": "onnx", "min_confidense": 0.3}')
    assert main(["validate-config"]) == 2
    assert "detector.onnx.min_confidense" in capsys.readouterr().err


def test_production_without_secrets_is_refused(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MICROPLATE_EDGE_MODE", "production")
    assert main(["validate-config"]) == 2
    err = capsys.readouterr().err
    assert "auth.operator_secret" in err and "auth.supervisor_pin_hash" in err


def test_db_commands(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "check"]) == 1
    assert "no database" in capsys.readouterr().err
    assert main(["db", "migrate"]) == 0
    assert main(["db", "check"]) == 0
    assert "integrity ok" in capsys.readouterr().out
    assert main(["db", "backup", "-o", str(env / "b.db")]) == 0
    assert (env / "b.db").stat().st_size > 0


def test_export_csv_writes_the_current_summary(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = Appliance(EdgeSettings())
    app.start()
    t = app.intake.submit_image(
        jpeg(plate_image(PLATE_A)), "a.jpg", RunRequest(sample_number="S-9")
    )
    assert app.intake.wait(t.id, 30).state == "done"
    app.stop()
    current = env / "share" / "S-9.csv"  # share.naming per_sample: rewritten in place
    current.unlink()
    assert main(["export-csv", "S-9"]) == 0
    assert [p.name for p in (env / "share").glob("*.csv")] == ["S-9.csv"]
    assert current.read_text().startswith("SAMPLE_NUMBER,")
    assert main(["export-csv", "NOPE"]) == 1
    assert "no sample" in capsys.readouterr().err.lower()


def test_calibrate_proposes_a_grid(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = env / "plate.jpg"
    image.write_bytes(jpeg(plate_image(PLATE_A)))
    out = env / "grid.json"
    assert main(["calibrate", str(image), "-o", str(out)]) == 0
    grid = CalibrationGrid.from_json(out.read_text())
    assert grid.plate_format.n_wells == 96
    bad = env / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["calibrate", str(bad)]) == 1
    assert capsys.readouterr().err.strip()


def test_demo_once_processes_images_and_writes_csvs(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROPLATE_EDGE_DETECTOR", json.dumps(fake_detector(PLATE_A, PLATE_B)))
    images = env / "imgs"
    images.mkdir()
    for i in range(4):
        (images / f"plate{i}.jpg").write_bytes(jpeg(plate_image(PLATE_A, seed=i)))
    assert main(["demo", "--once", "--images", str(images), "--data-dir", "dd"]) == 0
    out = capsys.readouterr().out
    assert "DEMO-001" in out and "DEMO-002" in out
    share = env / "dd" / "share"
    assert {p.name for p in share.glob("*.csv")} == {"DEMO-001.csv", "DEMO-002.csv"}
    creds = env / "dd" / "credentials.txt"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "operator_secret" in creds.read_text()
    # A second run reuses the stored runs and credentials.
    text = creds.read_text()
    assert main(["demo", "--once", "--images", str(images), "--data-dir", "dd"]) == 0
    assert creds.read_text() == text


def test_user_errors_never_show_a_traceback(env: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "export-csv", "S-1"],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "no database" in proc.stderr.lower()


def test_unreadable_paths_are_a_message_not_a_traceback(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = env / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MICROPLATE_EDGE_DATA_DIR", str(blocker / "data"))  # under a file
    assert main(["db", "migrate"]) == 1
    err = capsys.readouterr().err
    assert "Check the path" in err and "Traceback" not in err


def test_every_command_is_documented_in_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {a.dest: a.help for a in sub._choices_actions}  # type: ignore[attr-defined]
    for name in ("serve", "demo", "export-csv", "calibrate", "db", "validate-config"):
        assert helps.get(name), f"{name} has no help text"


def test_serve_answers_health_and_stops_cleanly_on_sigterm(env: Path) -> None:
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    body = r.read()
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
        assert b"ok" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert (env / "data" / "microplate.db").is_file()
