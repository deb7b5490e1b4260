"""Capture sources, chosen by `settings.capture.type`.

- `picamera2`: CSI camera through the picamera2 API (imported lazily; Raspberry Pi / Jetson).
- `opencv`: a V4L2 device index or a GStreamer pipeline string (Jetson CSI: nvarguscamerasrc).
- `files`: cycles through given image files (the demo).
- `fake`: tests (an image file or a generated blank plate; can simulate a lost camera).
- `folder`: a plate reader drops files; see `edge.folder`, which feeds the pipeline itself.

A camera that disappears is reported (`state`, `detail`) and reopened on the next grab after a
back-off, never fatal to the appliance.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import (
    FakeCaptureSettings,
    FilesCaptureSettings,
    FolderCaptureSettings,
    OpenCVCaptureSettings,
    Picamera2CaptureSettings,
)
from edge.errors import CaptureUnavailable
from edge.images import encode_jpeg

logger = logging.getLogger(__name__)


@dataclass
class Frame:
    """One captured plate: the encoded bytes we store as `raw`, and the pixels if known."""

    data: bytes
    filename: str
    source: str
    captured_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    image: np.ndarray | None = None


class CaptureSource(ABC):
    name = "none"

    def __init__(self) -> None:
        self.state = "idle"
        self.detail = ""

    def start(self) -> None:  # noqa: B027 - sources without hardware need no start
        """Open the device (failures are reported, not raised: it is retried on grab)."""

    def stop(self) -> None:  # noqa: B027
        """Release the device."""

    @abstractmethod
    def grab(self) -> Frame:
        """A fresh frame, or `CaptureUnavailable` with an operator message."""

    def preview_frame(self) -> np.ndarray | None:
        """A recent frame for the live preview; None when the source has no live view."""
        return None

    @property
    def can_capture(self) -> bool:
        return True


class FakeSource(CaptureSource):
    name = "fake"

    def __init__(self, settings: FakeCaptureSettings) -> None:
        super().__init__()
        self.settings = settings
        self.fail = settings.fail
        self.state = "ok"

    def _bytes(self) -> tuple[bytes, str]:
        if self.settings.image is not None:
            return self.settings.image.read_bytes(), self.settings.image.name
        return encode_jpeg(blank_plate()), "fake.jpg"

    def grab(self) -> Frame:
        if self.fail:
            self.state, self.detail = "unavailable", "the fake camera is set to fail"
            raise CaptureUnavailable(
                message="The camera is not answering. Check its cable; the appliance retries."
            )
        data, name = self._bytes()
        self.state, self.detail = "ok", ""
        return Frame(data=data, filename=name, source=self.name)


class FilesSource(CaptureSource):
    name = "files"

    def __init__(self, settings: FilesCaptureSettings) -> None:
        super().__init__()
        paths: list[Path] = []
        for p in settings.paths:
            if p.is_dir():
                paths.extend(sorted(x for x in p.glob(settings.glob) if x.is_file()))
            else:
                paths.append(p)
        self.paths = paths
        self._cycle = itertools.cycle(paths) if paths else None
        self._lock = threading.Lock()
        self.state = "ok" if paths else "unavailable"
        self.detail = "" if paths else "no image files configured"

    def grab(self) -> Frame:
        if self._cycle is None:
            raise CaptureUnavailable(message="No image files are configured for the files source.")
        with self._lock:
            path = next(self._cycle)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CaptureUnavailable(message=f"Cannot read {path.name}: {exc.strerror}.") from exc
        return Frame(data=data, filename=path.name, source=self.name)


class CameraSource(CaptureSource):
    """Shared reconnect/back-off and throttled preview for real cameras."""

    retry_s = 5.0

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._next_try = 0.0
        self._last: np.ndarray | None = None

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _read(self) -> np.ndarray | None: ...

    def start(self) -> None:
        with self._lock:
            self._try_open()

    def stop(self) -> None:
        with self._lock:
            self._close()
            self.state = "idle"

    def _try_open(self) -> bool:
        if self.state == "ok":
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        try:
            self._open()
        except Exception as exc:  # noqa: BLE001 - any driver failure means "camera missing"
            self._next_try = now + self.retry_s
            self.state, self.detail = "unavailable", f"cannot open the camera: {exc}"
            logger.warning("%s camera unavailable: %s", self.name, exc)
            return False
        self.state, self.detail = "ok", ""
        logger.info("%s camera opened", self.name)
        return True

    def _frame(self) -> np.ndarray:
        with self._lock:
            if not self._try_open():
                raise CaptureUnavailable(
                    message="The camera is not available: "
                    f"{self.detail}. Check its cable and power; the appliance keeps retrying."
                )
            image = self._read()
            if image is None:
                self._close()
                self.state, self.detail = "unavailable", "the camera stopped delivering frames"
                self._next_try = time.monotonic() + self.retry_s
                raise CaptureUnavailable(
                    message="The camera stopped delivering frames. Check its cable; "
                    "the appliance reconnects automatically."
                )
            self._last = image
            return image

    def grab(self) -> Frame:
        image = self._frame()
        stamp = datetime.now(timezone.utc)
        return Frame(
            data=encode_jpeg(image, quality=95),
            filename=f"capture-{stamp.strftime('%Y%m%dT%H%M%S')}.jpg",
            source=self.name,
            captured_at=stamp,
            image=image,
        )

    def preview_frame(self) -> np.ndarray | None:
        try:
            return self._frame()
        except CaptureUnavailable:
            return None


class OpenCVSource(CameraSource):
    name = "opencv"

    def __init__(self, settings: OpenCVCaptureSettings) -> None:
        super().__init__()
        self.settings = settings
        self._cap: Any = None

    def _open(self) -> None:
        dev = self.settings.device
        if isinstance(dev, str) and not dev.isdigit():
            cap = cv2.VideoCapture(
                dev, cv2.CAP_GSTREAMER
            )  # e.g. "nvarguscamerasrc ! ... ! appsink"
        else:
            cap = cv2.VideoCapture(int(dev))
        if not cap.isOpened():
            cap.release()
            raise OSError(f"OpenCV could not open device {dev!r}")
        if self.settings.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.settings.width)
        if self.settings.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.settings.height)
        for _ in range(self.settings.warmup_frames):  # auto-exposure settles on the first frames
            cap.read()
        self._cap = cap

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        # Drop the frame buffered since the last read so a capture shows the plate as it is now.
        self._cap.grab()
        ok, image = self._cap.read()
        return image if ok and image is not None else None


class Picamera2Source(CameraSource):
    name = "picamera2"

    def __init__(self, settings: Picamera2CaptureSettings) -> None:
        super().__init__()
        self.settings = settings
        self._cam: Any = None

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise OSError(
                "picamera2 is not installed (install the [jetson] extra on the device)"
            ) from exc
        cam = Picamera2(self.settings.camera_num)
        # "RGB888" in picamera2 is BGR byte order in memory, which is what OpenCV expects.
        config = cam.create_still_configuration(
            main={"size": (self.settings.width, self.settings.height), "format": "RGB888"}
        )
        cam.configure(config)
        cam.start()
        self._cam = cam

    def _close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception:
                logger.debug("picamera2 close failed", exc_info=True)
            self._cam = None

    def _read(self) -> np.ndarray | None:
        if self._cam is None:
            return None
        try:
            image = self._cam.capture_array("main")
        except Exception:
            logger.warning("picamera2 capture failed", exc_info=True)
            return None
        return np.ascontiguousarray(image[:, :, :3])


class FolderSource(CaptureSource):
    """Placeholder for on-demand capture: the folder source feeds the pipeline by itself."""

    name = "folder"

    def __init__(self, settings: FolderCaptureSettings) -> None:
        super().__init__()
        self.settings = settings
        self.state = "ok"

    @property
    def can_capture(self) -> bool:
        return False

    def grab(self) -> Frame:
        raise CaptureUnavailable(
            message="This appliance reads plates from a watched folder: drop the image file into "
            f"{self.settings.inbox} or upload it instead of pressing capture."
        )


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


def blank_plate(width: int = 1200, height: int = 800) -> np.ndarray:
    """A plain grey plate image (the fake camera's default frame)."""
    image = np.full((height, width, 3), 235, dtype=np.uint8)
    for r in range(8):
        for c in range(12):
            cx = int(width * (0.03 + 0.94 * (c + 0.5) / 12))
            cy = int(height * (0.03 + 0.94 * (r + 0.5) / 8))
            cv2.circle(
                image, (cx, cy), int(min(width / 12, height / 8) * 0.35), (200, 200, 220), -1
            )
    return image
