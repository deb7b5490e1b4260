"""Capture sources, chosen by `settings.capture.type`.

- `picamera2`: CSI camera through the picamera2 API (imported lazily; Raspberry Pi / Jetson).
- `opencv`: a V4L2 device index or a GStreamer pipeline string (Jetson CSI: nvarguscamerasrc).
- `files`: cycles through given image files (the demo).
- `fake`: tests (an image file or a generated blank plate; can simulate a lost camera).
- `folder`: a plate reader drops files; see `edge.services.intake`, which feeds the pipeline
  itself.

A camera that disappears is reported (`state`, `detail`) and reopened on the next grab after a
back-off, never fatal to the appliance.
"""

from __future__ import annotations

from typing import Any

from edge.capture.base import CaptureSource, Frame
from edge.capture.camera import CameraSource, OpenCVSource, Picamera2Source
from edge.capture.files import FakeSource, FilesSource, FolderSource, blank_plate
from edge.config import (
    FakeCaptureSettings,
    FilesCaptureSettings,
    FolderCaptureSettings,
    OpenCVCaptureSettings,
    Picamera2CaptureSettings,
)

__all__ = [
    "CameraSource",
    "CaptureSource",
    "FakeSource",
    "FilesSource",
    "FolderSource",
    "Frame",
    "OpenCVSource",
    "Picamera2Source",
    "blank_plate",
    "create_source",
]


def create_source(settings: Any) -> CaptureSource:
    if isinstance(settings, FakeCaptureSettings):
        return FakeSource(settings)
    if isinstance(settings, FilesCaptureSettings):
        return FilesSource(settings)
    if isinstance(settings, OpenCVCaptureSettings):
        return OpenCVSource(settings)
    if isinstance(settings, Picamera2CaptureSettings):
        return Picamera2Source(settings)
    if isinstance(settings, FolderCaptureSettings):
        return FolderSource(settings)
    raise ValueError(f"unknown capture source {settings!r}")
