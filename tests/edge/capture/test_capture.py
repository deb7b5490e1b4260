"""Capture sources: a lost camera is reported and retried, never fatal; preview is throttled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.app import Appliance
from edge.capture import CameraSource, FilesSource, OpenCVSource
from edge.config import FilesCaptureSettings, OpenCVCaptureSettings
from edge.errors import Busy, CaptureUnavailable
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, jpeg, plate_image


class FlakyCamera(CameraSource):
    """A camera that can be unplugged and plugged back in (stands in for the hardware)."""

    name = "flaky"
    retry_s = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.plugged = True
        self.opened = 0
        self.reads = 0

    def _open(self) -> None:
        if not self.plugged:
            raise OSError("no such device")
        self.opened += 1

    def _close(self) -> None:
        pass

    def _read(self) -> np.ndarray | None:
        if not self.plugged:
            return None
        self.reads += 1
        return plate_image(PLATE_A, seed=self.reads)


def test_camera_that_disappears_is_reported_and_reconnected(
    make_app: Callable[..., Appliance],
) -> None:
    cam = FlakyCamera()
    app = make_app(source=cam)
    t = app.intake.capture(RunRequest(sample_number="C-1"))
    assert app.intake.wait(t.id, 30).state == "done"
    cam.plugged = False
    with pytest.raises(CaptureUnavailable) as err:
        app.intake.capture(RunRequest(sample_number="C-1"))
    assert "camera" in err.value.message.lower()
    assert app.health.status().camera.state == "unavailable"
    assert app.health.readiness().ready  # the appliance itself is still ready (uploads work)
    cam.plugged = True
    t = app.intake.capture(RunRequest(sample_number="C-1"))
    assert app.intake.wait(t.id, 30).state == "done"
    assert cam.opened == 2 and app.health.status().camera.state == "ok"


def test_opencv_source_without_device_is_unavailable_not_fatal() -> None:
    src = OpenCVSource(OpenCVCaptureSettings(device=97, warmup_frames=0))
    src.start()
    assert src.state == "unavailable"
    with pytest.raises(CaptureUnavailable):
        src.grab()
    src.stop()


def test_files_source_cycles(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"p{i}.jpg").write_bytes(jpeg(plate_image(PLATE_A, seed=i)))
    src = FilesSource(FilesCaptureSettings(paths=[tmp_path]))
    assert [src.grab().filename for _ in range(3)] == ["p0.jpg", "p1.jpg", "p0.jpg"]


def test_preview_is_throttled(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    cam = FlakyCamera()
    app = make_app(make_settings(preview_max_fps=2.0), source=cam)
    first = app.intake.preview_jpeg()
    assert first is not None and first[:2] == b"\xff\xd8"
    reads = cam.reads
    for _ in range(20):
        assert app.intake.preview_jpeg() == first
    assert cam.reads == reads  # no new frame within 0.5 s
    time.sleep(0.55)
    app.intake.preview_jpeg()
    assert cam.reads == reads + 1


class BlockingDetector:
    """Wraps a real detector and holds each inference until released."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.model = inner.model
        self.backend = inner.backend
        self.settings = inner.settings

    def detect(self, image: np.ndarray) -> Any:
        self.release.wait(30)
        return self.inner.detect(image)


def test_full_queue_says_busy_and_drops_nothing(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    from pydantic import TypeAdapter

    from edge.detect.base import create_detector
    from edge.detect.settings import DetectorSettings

    settings = make_settings(queue_size=2)
    det = BlockingDetector(
        create_detector(TypeAdapter(DetectorSettings).validate_python(settings.detector))
    )
    app = make_app(settings, detector=det)
    tickets = []
    with pytest.raises(Busy) as err:
        for i in range(10):
            data = jpeg(plate_image(PLATE_A, seed=100 + i))
            tickets.append(
                app.intake.submit_image(data, f"{i}.jpg", RunRequest(sample_number="B-1"))
            )
    assert err.value.http_status == 503 and err.value.retry_after_s > 0
    assert "busy" in err.value.message.lower()
    assert 2 <= len(tickets) <= 3  # one in the detector, two waiting
    det.release.set()
    assert all(app.intake.wait(t.id, 30).state == "done" for t in tickets)
    assert app.runs.get_sample("B-1").plates == len(tickets)
