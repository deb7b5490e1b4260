"""The plate reader in force: the detector (and the well classifier, when the model directory
has one) loaded at start-up, and the read of one plate with today's runtime settings and grid.

The classifier comes from `detector.wells_model_dir`, or from `wells_dir` when a model update
switched to another one (`edge.services.ota`); if that one cannot load, the configured one is
loaded instead and `wells_error` says why. While a candidate shadows (`shadow`), every plate the
classifier read is read again by the candidate on the same frame; only the first read counts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.detect.plate import PlateResult, make_reader, model_info, read_plate
from edge.detect.plate import decode as decode_frame
from edge.errors import ApplianceError, InvalidInput

if TYPE_CHECKING:
    from core.calibration import CalibrationGrid
    from edge.config import EdgeSettings
    from edge.ports import RuntimeSource, ShadowPort

logger = logging.getLogger(__name__)


class PlateReadingService:
    """`detector` and `wells` may be handed in (tests, tools); otherwise `load()` creates them
    from the settings and `close()` releases them. `grid` returns the calibration in force."""

    def __init__(
        self,
        settings: EdgeSettings,
        runtime: RuntimeSource,
        grid: Callable[[], CalibrationGrid | None],
        *,
        detector: Any | None = None,
        wells: Any | None = None,
        wells_dir: Path | None = None,
    ) -> None:
        self._settings = settings
        self._wells_dir = wells_dir
        self.wells_error = ""  # why `wells_dir` could not be loaded (the configured one was)
        self.shadow: ShadowPort | None = None
        self._swap = threading.Lock()
        self._runtime = runtime
        self._grid = grid
        self.detector: Any | None = detector
        self.wells: Any | None = wells  # WellClassifier: reads calibrated plates crop by crop
        self._own_wells = False  # loaded here (closed by close()), not handed in
        self._injected_detector = detector is not None
        self.error = ""

    def load(self) -> None:
        """Create the detector (and the classifier) unless one was handed in; an error is kept
        for the status page and raised."""
        if self.detector is not None:
            return
        try:
            self._load()
        except BaseException as exc:
            self.error = str(exc)
            raise

    def _load(self) -> None:
        from edge.detect.base import create_detector

        self.detector = create_detector(self._settings.detector)
        if self.wells is None:
            from edge.detect.classifier import create_classifier

            try:
                self.wells = None
                if self._wells_dir is not None:
                    try:
                        self.wells = self.load_classifier(self._wells_dir)
                    except Exception as exc:  # noqa: BLE001 - any backend error: fall back
                        self.wells_error = f"{self._wells_dir}: {exc}"
                        logger.error(
                            "the switched-to well classifier %s does not load (%s); reading "
                            "with the configured one",
                            self._wells_dir,
                            exc,
                        )
                if self.wells is None:
                    self.wells = create_classifier(self._settings.detector)
            except BaseException:
                self.detector.close()
                self.detector = None
                raise
            self._own_wells = self.wells is not None

    def close(self) -> None:
        if self.detector is not None and not self._injected_detector:
            close = getattr(self.detector, "close", None)
            if callable(close):
                close()
            self.detector = None
        if self.wells is not None and self._own_wells:
            self.wells.close()
            self.wells = None
            self._own_wells = False

    def require_detector(self) -> Any:
        if self.detector is None:
            raise ApplianceError(
                "no_detector",
                f"The detector is not loaded: {self.error or 'see the status page'}.",
            )
        return self.detector

    def decode(self, data: bytes) -> np.ndarray:
        """Full-size decode (calibration proposals); InvalidInput for a bad file."""
        from edge.detect.errors import ImageDecodeError
        from edge.detect.imageio import decode_image

        try:
            return decode_image(data)
        except ImageDecodeError as exc:
            raise InvalidInput(
                code="bad_image", message=f"The image cannot be read: {exc}"
            ) from exc

    def read_frame(self, frame_image: np.ndarray | None, data: bytes) -> PlateResult:
        """Decode (unless the camera gave pixels) and read one plate with today's settings;
        a shadowing candidate then reads the same frame (its result is only compared)."""
        detector = self.require_detector()
        params = self._runtime.get()
        grid = self._grid()
        reader = make_reader(detector, grid=grid, params=params, wells=self.wells)
        factor, full, decode_ms = 1, None, 0.0
        if frame_image is not None:
            image = frame_image
        else:
            image, factor, full, decode_ms = decode_frame(
                detector, data, reader, min_width=self._settings.annotated_max_width
            )
        t0 = time.perf_counter()
        result = read_plate(
            detector,
            image,
            grid=grid,
            params=params,
            reduced_by=factor,
            full_size=full,
            decode_ms=decode_ms,
            reader=reader,
        )
        current_ms = (time.perf_counter() - t0) * 1e3
        shadow = self.shadow
        if shadow is not None and result.reader == "classifier":

            def again(candidate: Any) -> PlateResult:
                return read_plate(
                    detector,
                    image,
                    grid=grid,
                    params=params,
                    reduced_by=factor,
                    full_size=full,
                    reader=make_reader(detector, grid=grid, params=params, wells=candidate),
                )

            try:
                shadow.shadow_read(again, result, current_ms)
            except Exception:  # the plate counts whatever the candidate did
                logger.exception("shadow read failed")
        return result

    # -- the classifier slot (edge.ports.ClassifierSlot), for model updates -------------------
    def classifier_manifest(self) -> dict[str, Any] | None:
        """The running classifier's manifest (input, classes): a release's files are read
        with it."""
        wells = self.wells
        if wells is None:
            return None
        manifest: dict[str, Any] = wells.model.manifest.model_dump(mode="json")
        return manifest

    def load_classifier(self, directory: Path) -> Any:
        """A classifier from `directory` through the configured backend (ONNX Runtime, or
        TensorRT with the engine cache), warmed up; raises what the backend raised."""
        from edge.detect.classifier import create_classifier

        settings = self._settings.detector.model_copy(update={"wells_model_dir": directory})
        classifier = create_classifier(settings)
        if classifier is None:
            raise ValueError(f"{directory} holds no well classifier")
        return classifier

    def promote(self, classifier: Any) -> None:
        """Make `classifier` the one in force; the one it replaces is closed (called on the
        read thread, between plates)."""
        with self._swap:
            old, owned = self.wells, self._own_wells
            self.wells = classifier
            self._own_wells = True
        if old is not None and owned and old is not classifier:
            old.close()

    def model_info(self) -> dict[str, str]:
        return model_info(self.detector) if self.detector is not None else {}

    def classifier_info(self) -> dict[str, str] | None:
        wells = self.wells
        if wells is None:
            return None
        return {
            "name": wells.model.name,
            "version": wells.model.version,
            "backend": wells.backend,
            "precision": wells.precision,
        }
