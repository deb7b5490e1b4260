"""Real cameras: picamera2 (CSI, imported lazily) and OpenCV (a V4L2 index or a GStreamer
pipeline). A camera that disappears is reported (`state`, `detail`) and reopened on the next
grab after a back-off, never fatal to the appliance."""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from datetime import datetime, timezone
from typing import Any

import cv2
import numpy as np

from edge.capture.base import CaptureSource, Frame
from edge.config import OpenCVCaptureSettings, Picamera2CaptureSettings
from edge.errors import CaptureUnavailable
from edge.files.images import encode_jpeg

logger = logging.getLogger(__name__)


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
