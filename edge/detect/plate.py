"""One plate image -> well calls, rows, distribution and statistics, via `edge.detect`.

A thin layer over `edge.detect.reader.PlateReader`: a reader is built per plate from the
runtime settings a supervisor may change (dilution, threshold, protective titre) and the current
calibration, so a change applies to the very next plate. Large JPEGs are decoded at a reduced
size (libjpeg IDCT scaling) when the model input is much smaller; the reading still reports
full-size pixels, and `PlateResult.scale` says how to draw on the reduced frame.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.calibration import CalibrationGrid
from core.plate import PlateFormat
from core.stats import Statistics
from core.titre import DilutionSettings, RowResult
from core.wells import WellCall
from edge.errors import InvalidInput
from edge.schemas import RuntimeSettings

logger = logging.getLogger(__name__)


@dataclass
class PlateResult:
    wells: dict[str, WellCall]
    rows: list[RowResult]
    statistics: Statistics
    distribution: dict[str, int]
    detections: list[Any]
    grid: CalibrationGrid
    fmt: PlateFormat
    dilution: DilutionSettings
    image: np.ndarray  # the decoded frame (possibly reduced), for the annotated image
    scale: float = 1.0  # frame pixels per full-size pixel
    min_confidence: float = 0.0
    model: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The plate-quality gate: a read that needs review is stored and shown, counts no row and
    # writes no CSV (see edge.detect.gate).
    needs_review: bool = False
    review_reasons: tuple[str, ...] = ()
    reader: str = "detector"
    reading: str | None = None


def dilution_of(params: RuntimeSettings) -> DilutionSettings:
    return DilutionSettings(
        start_dilution=params.start_dilution,
        factor=params.dilution_factor,
        control_columns=tuple(params.control_columns),
    )


def decode(
    detector: Any, data: bytes, reader: Any | None = None, *, min_width: int = 0
) -> tuple[np.ndarray, int, tuple[int, int] | None, float]:
    """(frame, reduction factor, full (w, h) or None, decode ms); a bad file -> InvalidInput.
    With `reader` (a PlateReader) the reduction suits its path (classifier crops or the
    detector's input).

    The frame is also what the annotated image is drawn on, so it is decoded at least
    `min_width` wide (or at full size if narrower): a frame reduced only for the model left a
    1700 px photo annotated at 425 px, too small to check a well by eye."""
    from edge.detect.errors import ImageDecodeError
    from edge.detect.imageio import decode_image, header_size, image_format, reduction_for
    from edge.detect.reader import _full_size

    t0 = time.perf_counter()
    spec = detector.model.input
    try:
        if getattr(detector, "needs_full_frame", False):
            factor = 1
        elif reader is not None:
            factor = reader.reduction(data)
        else:
            factor = reduction_for(data, spec.height, spec.width)
        if factor > 1 and min_width > 0:
            fmt = image_format(data)
            size = header_size(data, fmt) if fmt else None
            while size and factor > 1 and size[0] / factor < min(min_width, size[0]):
                factor //= 2
        image = decode_image(data, reduce=factor)
    except ImageDecodeError as exc:
        raise InvalidInput(code="bad_image", message=f"The image cannot be read: {exc}") from exc
    # the same full size as PlateReader.read_bytes, EXIF rotation allowed for
    full = _full_size(data, image, factor)
    return image, factor, full, (time.perf_counter() - t0) * 1000.0


def make_reader(
    detector: Any, *, grid: CalibrationGrid | None, params: RuntimeSettings, wells: Any = None
) -> Any:
    """A PlateReader for today's settings: the classifier path when a grid and `wells` (a
    WellClassifier) are there, in the calibration's reading mode or the runtime setting."""
    from edge.detect.reader import PlateReader

    return PlateReader(
        detector,
        grid=grid,
        min_confidence=params.min_confidence,
        dilution=dilution_of(params),
        protective_titre=params.protective_titre,
        wells=wells,
        reading=params.reading,
        well_threshold=params.well_threshold,
    )


def read_plate(
    detector: Any,
    image: np.ndarray,
    *,
    grid: CalibrationGrid | None,
    params: RuntimeSettings,
    reduced_by: int = 1,
    full_size: tuple[int, int] | None = None,
    decode_ms: float = 0.0,
    wells: Any = None,
    reader: Any = None,
) -> PlateResult:
    reader = reader or make_reader(detector, grid=grid, params=params, wells=wells)
    dil = reader.dilution
    reading = reader.read(image, decode_ms=decode_ms, reduced_by=reduced_by, full_size=full_size)
    return PlateResult(
        wells=reading.wells,
        rows=reading.rows,
        statistics=reading.statistics,
        distribution=reading.distribution,
        detections=reading.detections,
        grid=reading.grid,
        fmt=reading.grid.plate_format,
        dilution=dil,
        image=image,
        scale=image.shape[1] / reading.image_width,
        # The threshold that decided the calls: the classifier's, or the detector's.
        min_confidence=reader.well_threshold
        if reading.reader == "classifier"
        else params.min_confidence,
        model={**reading.model, "backend": reading.backend},
        timings_ms=dict(reading.timings_ms),
        needs_review=reading.needs_review,
        review_reasons=reading.review_reasons,
        reader=reading.reader,
        reading=reading.reading,
    )


def detect(detector: Any, image: np.ndarray) -> tuple[list[Any], dict[str, float]]:
    result = detector.detect(image)
    return list(result.detections), dict(result.timings_ms)


def model_info(detector: Any) -> dict[str, str]:
    """Name/version/sha256/backend of the loaded model."""
    info = dict(detector.model.info()) if hasattr(detector.model, "info") else {}
    info["backend"] = str(getattr(detector, "backend", type(detector).__name__))
    return info
