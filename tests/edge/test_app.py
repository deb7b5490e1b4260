"""Facade odds and ends: start failures, readiness, status, metrics, annotation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from edge.app import Appliance
from edge.files.images import annotate
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, jpeg, plate_image


def test_missing_model_fails_start_with_a_clear_message(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    from edge.detect.errors import DetectorError

    app = Appliance(make_settings(detector={"type": "onnx", "model_dir": str(tmp_path / "nope")}))
    with pytest.raises(DetectorError) as err:
        app.start()
    assert "nope" in str(err.value)
    assert app.store._writer is None  # nothing half-started stays open


def test_status_readiness_and_metrics(app: Appliance) -> None:
    t = app.intake.submit_image(
        jpeg(plate_image(PLATE_A)), "a.jpg", RunRequest(sample_number="M-1")
    )
    assert app.intake.wait(t.id, 30).state == "done"
    ready = app.health.readiness()
    assert ready.ready and set(ready.checks) >= {"database", "detector", "disk", "share"}
    status = app.health.status()
    assert status.sync.backlog == 1 and status.model.loaded and status.model.backend == "fake"
    assert status.queue.capacity == app.settings.queue_size
    text = generate_latest(app.metrics.registry).decode()
    assert "microplate_outbox_depth 1.0" in text
    assert 'microplate_runs_total{status="done"} 1.0' in text
    assert "microplate_inference_seconds_count 1.0" in text
    assert "microplate_csv_written_total 1.0" in text
    # The disk alerts compare free space against the appliance's own floor.
    floor = re.search(r"^microplate_disk_floor_bytes (\S+)$", text, re.MULTILINE)
    assert floor is not None
    assert float(floor.group(1)) == app.settings.retention.disk_floor_mb * 1024 * 1024


def test_missing_share_is_not_ready_and_the_csv_waits_for_it(app: Appliance) -> None:
    share = app.settings.share_dir
    share.rmdir()  # as if the share was unmounted
    t = app.intake.submit_image(
        jpeg(plate_image(PLATE_A)), "a.jpg", RunRequest(sample_number="M-2")
    )
    assert app.intake.wait(t.id, 30).state == "done"  # the run is stored regardless
    assert not share.exists()  # never created behind the LIMS's back
    assert app.health.readiness().checks["share"] != "ok"
    sample = app.runs.get_sample("M-2")
    assert sample.csv is not None and sample.csv.pending
    share.mkdir()
    assert app.runs.exporter.export_dirty() == 1  # what the retry worker does
    assert not app.runs.get_sample("M-2").csv.pending  # type: ignore[union-attr]
    assert (share / "M-2.csv").is_file()


def test_annotation_scales_boxes_onto_a_reduced_or_capped_frame() -> None:
    class Well:
        well_id, state, flags = "A1", "flowing", ()
        box = (100.0, 100.0, 200.0, 200.0)

    frame = np.zeros((500, 700, 3), np.uint8)
    out = annotate(frame, [Well()], None, scale=0.5)
    assert out.shape == frame.shape and out[50, 50:100].any()  # box edge at full-size 100 -> 50
    capped = annotate(np.zeros((800, 2400, 3), np.uint8), [Well()], None, max_width=1200)
    assert capped.shape == (400, 1200, 3) and capped[50, 50:100].any()
