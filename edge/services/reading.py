"""The plate reader in force: the detector (and the well classifier, when the model directory
has one) loaded at start-up, and the read of one plate with today's runtime settings and grid."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.detect.plate import PlateResult, make_reader, model_info, read_plate
from edge.detect.plate import decode as decode_frame
from edge.errors import ApplianceError, InvalidInput

if TYPE_CHECKING:
    from core.calibration import CalibrationGrid
    from edge.config import EdgeSettings
    from edge.ports import RuntimeSource

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
    ) -> None:
        self._settings = settings
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
        """Decode (unless the camera gave pixels) and read one plate with today's settings."""
        detector = self.require_detector()
        params = self._runtime.get()
        grid = self._grid()
        reader = make_reader(detector, grid=grid, params=params, wells=self.wells)
        if frame_image is not None:
            return read_plate(detector, frame_image, grid=grid, params=params, reader=reader)
        image, factor, full, decode_ms = decode_frame(
            detector, data, reader, min_width=self._settings.annotated_max_width
        )
        return read_plate(
            detector,
            image,
            grid=grid,
            params=params,
            reduced_by=factor,
            full_size=full,
            decode_ms=decode_ms,
            reader=reader,
        )

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
