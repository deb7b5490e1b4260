"""The shipped model over the bundled sample plates, through the whole appliance and the demo.

These need `models/hi-plate/` (model.onnx + manifest.json) and `models/samples/`, committed by
the model work; until both are in the tree they are skipped with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from core.calibration import CalibrationGrid
from edge.app import Appliance
from edge.cli import main
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "hi-plate"
SAMPLES = ROOT / "models" / "samples"
HAVE = (
    (MODEL / "model.onnx").is_file()
    and (SAMPLES / "index.json").is_file()
    and (ROOT / "models" / "hi-wells" / "manifest.json").is_file()
)
pytestmark = pytest.mark.skipif(
    not HAVE, reason="the shipped model and sample plates are not in this tree yet"
)


def samples() -> list[dict[str, str]]:
    return json.loads((SAMPLES / "index.json").read_text()) if HAVE else []


def test_sample_plates_give_their_true_endpoints(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    app = make_app(make_settings(detector={"type": "onnx", "model_dir": str(MODEL)}))
    assert app.reading.wells is not None, (
        "the well classifier (models/hi-wells) is the default reader"
    )
    exact = total = wells_right = 0
    for entry in samples():
        grid = CalibrationGrid.from_json((SAMPLES / entry["calibration"]).read_text())
        # Each bundled plate is read in its own mode (index.json), as its holder's grid says.
        reading = entry.get("reading", "tilted")
        app.calibration.set(grid.model_copy(update={"reading": reading}), actor="test")
        data = (SAMPLES / entry["image"]).read_bytes()
        t = app.intake.submit_image(data, entry["image"], RunRequest(sample_number="SMP-1"))
        state = app.intake.wait(t.id, 60)
        assert state.state == "done", state
        run = app.runs.get_run(state.run_id or "")
        truth = json.loads((SAMPLES / entry["truth"]).read_text())
        assert run.model.get("sha256") and run.model.get("backend") == "onnx"
        assert run.reading == reading and not run.needs_review, (entry, run.review_reasons)
        for row, true_row in zip(run.rows, truth["rows"], strict=True):
            total += 1
            exact += row.endpoint == true_row["endpoint"]
            # A counted row is a titre the lab receives: it must be the true one.
            assert not row.counted or row.endpoint == true_row["endpoint"], (entry, row)
            calls = [w.state for w in run.wells if w.row == row.row]
            wells_right += sum(c == t for c, t in zip(calls, true_row["states"], strict=True))
        assert app.runs.run_image(run.run_id, "annotated").stat().st_size > 10_000
    assert total == 8 * len(samples())
    # The well classifier's accuracy is in its model card (hi-wells 2.0.0, the first one,
    # read 47/48 endpoints and 542/576 wells of these plates; the bars hold the product's
    # promise on rows, not one model's figures).
    assert exact / total >= 0.95, f"{exact}/{total} rows with the exact endpoint"
    assert wells_right / (12 * total) >= 0.9, f"{wells_right}/{12 * total} wells right"
    sample = app.runs.get_sample("SMP-1")
    assert sample.plates == len(samples()) and sample.csv and not sample.csv.pending


def test_demo_once_on_the_bundled_plates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--once"]) == 0
    out = capsys.readouterr().out
    assert "DEMO-001" in out
    share = tmp_path / "demo-data" / "share"
    assert len(list(share.glob("*.csv"))) == (len(samples()) + 1) // 2  # one file per sample
    assert (tmp_path / "demo-data" / "microplate.db").is_file()
