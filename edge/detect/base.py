"""The detector interface, the work every backend shares, and the backend registry.

A backend only moves tensors: it implements `infer(tensor) -> list[np.ndarray]` (and
`close()`); letterbox, normalisation, decoding and NMS happen once, here and in
`edge.detect.processing`. Adding a backend = one settings class, one file, one line in
`BACKENDS`.
"""

from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from core.detection import Detection
from edge.detect.errors import DetectorError
from edge.detect.model import LoadedModel, load_model
from edge.detect.processing import LetterboxInfo, decode, postprocess, prepare_input
from edge.detect.settings import DetectorSettings

logger = logging.getLogger(__name__)

# type -> "module:Class"; imported only when chosen, so the CPU suite never imports TensorRT.
BACKENDS: dict[str, str] = {
    "onnx": "edge.detect.onnx_backend:OnnxDetector",
    "tensorrt": "edge.detect.tensorrt_backend:TensorRTDetector",
    "fake": "edge.detect.fake:FakeDetector",
}


@dataclass(frozen=True)
class DetectionResult:
    """Detections in image pixels plus how long each stage took (milliseconds)."""

    detections: list[Detection]
    image_width: int
    image_height: int
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detector(ABC):
    """Base class of every backend; `detect()` is implemented once on top of `infer()`."""

    backend: ClassVar[str]
    # A backend whose boxes are in the pixels of the frame it is given (a scripted one) reads
    # the frame at full size; a real model sees a letterboxed tensor, so a reduced decode suits it.
    needs_full_frame: ClassVar[bool] = False

    def __init__(self, settings: Any, model: LoadedModel) -> None:
        self.settings = settings
        self.model = model
        # Set by detect() before infer(): lets a scripted backend place boxes in tensor space.
        self._letterbox: LetterboxInfo | None = None

    @classmethod
    def model_for(cls, settings: Any) -> LoadedModel:
        """Load and verify the model this backend will run (the fake overrides: no file)."""
        return load_model(settings.model_dir)

    @classmethod
    def create(cls, settings: Any, model: LoadedModel) -> Detector:
        """Start the backend (TensorRT overrides it to offer its ONNX fallback)."""
        return cls(settings, model)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW shape the model takes, from the manifest."""
        return (1, 3, self.model.input.height, self.model.input.width)

    @abstractmethod
    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the model on one NCHW float32 tensor; return its raw outputs."""

    def close(self) -> None:  # noqa: B027 - backends without resources need no close
        """Release runtime resources; the detector cannot be used afterwards."""

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_input_shape(self, actual: tuple[Any, ...], where: str) -> None:
        """Fail at start-up when the runtime's input shape disagrees with the manifest."""
        expected = self.input_shape
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in actual)
        if len(dims) != 4 or any(
            d is not None and d != e for d, e in zip(dims, expected, strict=True)
        ):
            raise DetectorError(
                f"{where} takes input {tuple(actual)} but the manifest says {expected}: the model "
                "file and manifest.json do not belong together. Re-export the model or fix the "
                "manifest's input height/width."
            )

    def warm_up(self) -> None:
        """One inference on a blank input, so the first plate does not pay for lazy setup."""
        start = time.perf_counter()
        outputs = self.infer(np.zeros(self.input_shape, dtype=np.float32))
        if not outputs:
            raise DetectorError(f"the {self.backend} backend returned no output tensor")
        # Decoding checks the output shape against the manifest's layout and class count, so a
        # mismatched manifest fails now rather than on the first plate.
        decode(
            outputs[0],
            self.model.output.layout,
            self.model.output.box,
            num_classes=self.model.num_classes,
            min_confidence=1.0,
        )
        logger.info(
            "%s detector warmed up in %.0f ms", self.backend, (time.perf_counter() - start) * 1e3
        )

    def detect(self, image_bgr: np.ndarray) -> DetectionResult:
        """Detect on one BGR uint8 image (H, W, 3); boxes come back in its pixels."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise DetectorError(
                f"expected a BGR uint8 image (H, W, 3), got {image_bgr.dtype} {image_bgr.shape}"
            )
        spec = self.model.input
        t0 = time.perf_counter()
        tensor, info = prepare_input(image_bgr, spec)
        self._letterbox = info
        t1 = time.perf_counter()
        outputs = self.infer(tensor)
        t2 = time.perf_counter()
        detections = postprocess(
            outputs,
            self.model,
            info,
            min_confidence=self.settings.min_confidence,
            iou_threshold=self.settings.iou_threshold,
            max_detections=self.settings.max_detections,
        )
        t3 = time.perf_counter()
        return DetectionResult(
            detections=detections,
            image_width=image_bgr.shape[1],
            image_height=image_bgr.shape[0],
            timings_ms={
                "preprocess": (t1 - t0) * 1e3,
                "infer": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            },
        )


def backend_class(kind: str) -> type[Detector]:
    """The Detector subclass registered for `kind` (imports its module now)."""
    try:
        target = BACKENDS[kind]
    except KeyError:
        raise DetectorError(
            f"unknown detector type {kind!r}; choose one of {', '.join(sorted(BACKENDS))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls: type[Detector] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_detector(settings: DetectorSettings, *, warm_up: bool = True) -> Detector:
    """Load and verify the model, start the chosen backend and warm it up.

    Raises `DetectorError` (or a subclass) whose message says what to do; nothing half-started
    is left behind.
    """
    cls = backend_class(settings.type)
    model = cls.model_for(settings)
    detector = cls.create(settings, model)
    if warm_up:
        try:
            detector.warm_up()
        except BaseException:
            detector.close()  # never leave a half-started runtime (GPU memory) behind
            raise
    logger.info(
        "detector ready: backend=%s model=%s %s (%s) classes=%s",
        detector.backend,
        model.name,
        model.version,
        model.sha256[:12],
        list(model.classes),
    )
    return detector
