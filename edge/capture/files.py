"""Sources without a camera: the fake one (tests; a generated blank plate or an image file, can
simulate a lost camera), `files` (cycles through image files: the demo) and `folder` (a plate
reader drops files into a watched folder, which feeds the pipeline by itself)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np

from edge.capture.base import CaptureSource, Frame
from edge.config import FakeCaptureSettings, FilesCaptureSettings, FolderCaptureSettings
from edge.errors import CaptureUnavailable
from edge.files.images import encode_jpeg


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
