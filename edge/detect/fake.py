"""Scripted detector for tests and demos: no model file, no runtime.

It still goes through the shared path: `detect()` letterboxes the image, `infer()` returns the
scripted boxes as an `nms_free` head would (in input-tensor pixels), and the shared
post-processing maps them back. So a test of the pipeline exercises the real decode code.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from edge.detect.base import Detector
from edge.detect.errors import DetectorError
from edge.detect.model import InputSpec, LoadedModel, OutputSpec
from edge.detect.settings import FakeBox, FakeDetectorSettings


class FakeDetector(Detector):
    backend = "fake"
    needs_full_frame = True  # its scripted boxes are in the pixels of the full frame

    def __init__(self, settings: FakeDetectorSettings, model: LoadedModel) -> None:
        super().__init__(settings, model)
        unknown = {
            box.class_name
            for frame in settings.frames
            for box in frame
            if box.class_name not in settings.classes
        }
        if unknown:
            raise DetectorError(
                f"fake detector frames use classes {sorted(unknown)} that are not in its classes "
                f"{settings.classes}"
            )
        self._frames = itertools.cycle(settings.frames)
        self._lock = threading.Lock()
        self.calls = 0

    @classmethod
    def model_for(cls, settings: FakeDetectorSettings) -> LoadedModel:
        return LoadedModel(
            directory=settings.model_dir,
            onnx_path=None,
            name="fake",
            version="0",
            sha256="0" * 64,
            classes=tuple(settings.classes),
            input=InputSpec(height=settings.input_size, width=settings.input_size),
            output=OutputSpec(layout="nms_free", box="xyxy"),
            from_manifest=False,
        )

    def warm_up(self) -> None:
        """Nothing to warm; a blank warm-up must not consume a scripted frame."""

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        if tuple(tensor.shape) != self.input_shape:
            raise DetectorError(f"fake detector got input {tensor.shape}, wants {self.input_shape}")
        with self._lock:
            frame: list[FakeBox] = next(self._frames)
            self.calls += 1
        info = self._letterbox
        rows = np.zeros((len(frame), 6), dtype=np.float32)
        for i, box in enumerate(frame):
            coords = np.array([box.x1, box.y1, box.x2, box.y2], dtype=np.float64)
            if info is not None:
                coords[[0, 2]] = coords[[0, 2]] * info.scale_x + info.pad_x
                coords[[1, 3]] = coords[[1, 3]] * info.scale_y + info.pad_y
            rows[i, :4] = coords
            rows[i, 4] = box.confidence
            rows[i, 5] = self.model.classes.index(box.class_name)
        return [rows[None, :, :]]
