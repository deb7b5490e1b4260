"""`PlateReader`: one plate image in, well calls + row titres + statistics out.

    reader = PlateReader(create_detector(settings), grid=saved_grid_or_None)
    reading = reader.read_file(Path("plate.jpg"))      # or read_bytes(data) / read(image_bgr)
    reading.wells["A1"].state, reading.rows[0].titre, reading.statistics.gmt
    reading.to_dict()                                  # the JSON shape `analyze --json` prints

Two ways to call the wells:
- **classifier** (the default once a calibration grid is known and a well classifier is
  loaded): one crop per calibrated well through `WellClassifier` in the reading mode
  (`tilted` | `untilted`: the calibration's `reading`, else the reader's); with
  `detector.row_decode.enabled` each row's test wells are then decoded together
  (`core.rowdecode`), and the gate still judges the per-well calls.
- **detector** (no calibration, or no classifier): detect (any backend) ->
  `core.wells.call_wells` on the calibration grid scaled to the frame (a uniform grid over the
  frame when there is no calibration).
Then the plate-quality gate (`edge.detect.gate`): a read with review reasons is
`needs_review` and its rows are held (`core.titre.hold_for_review`: shown, never counted) ->
`core.titre.row_results` -> `core.stats`. Decoding (`decode_image`) raises `ImageDecodeError`
for a bad file. The detector's
`min_confidence` only drops weak boxes early; the well-call threshold (`min_confidence` here)
decides between a call and `unread` + `low_confidence`, so an uncertain well is shown, never
guessed. A reader holds no state between plates: one reader may serve many images, but not
from two threads at once unless its detector allows it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.plate import PLATE_96, PlateFormat
from core.stats import Statistics, compute_statistics, distribution
from core.titre import CountingPolicy, DilutionSettings, RowResult, hold_for_review, row_results
from core.wells import DEFAULT_MIN_CONFIDENCE, ClassMap, ClassMapError, WellCall, call_wells
from edge.detect.base import Detector
from edge.detect.classifier import WellClassifier, classifier_reduction
from edge.detect.errors import DetectorError
from edge.detect.gate import call_agreement, frame_is_blank, review_reasons
from edge.detect.imageio import (
    decode_image,
    header_size,
    image_format,
    read_file_bytes,
    reduction_for,
)
from edge.detect.settings import ReviewSettings
from edge.detect.wells_model import ReadingMode

logger = logging.getLogger(__name__)

TIMING_KEYS = ("decode", "preprocess", "infer", "postprocess", "total")


@dataclass(frozen=True)
class PlateReading:
    """Everything read from one plate image."""

    model: dict[str, str]
    backend: str
    image_width: int
    image_height: int
    grid: CalibrationGrid
    grid_source: str
    detections: list[Detection]
    wells: dict[str, WellCall]
    rows: list[RowResult]
    distribution: dict[str, int]
    statistics: Statistics
    timings_ms: dict[str, float]
    reader: str = "detector"  # "classifier" | "detector": which path called the wells
    reading: str | None = None  # the reading mode the classifier used
    needs_review: bool = False
    review_reasons: tuple[str, ...] = ()
    precision_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; a well without any box reports confidence 0.0."""
        return {
            "model": dict(self.model),
            "backend": self.backend,
            "image_size": [self.image_width, self.image_height],
            "calibration": {"source": self.grid_source, "grid_id": self.grid.grid_id},
            "reader": self.reader,
            "reading": self.reading,
            "needs_review": self.needs_review,
            "review_reasons": list(self.review_reasons),
            "precision_agreement": self.precision_agreement,
            "wells": {
                well_id: {
                    "call": call.state,
                    "confidence": round(float(call.confidence or 0.0), 4),
                    "flags": list(call.flags),
                }
                for well_id, call in self.wells.items()
            },
            "rows": {
                row.label: {
                    "endpoint": row.endpoint,
                    "titre": row.titre,
                    "flags": list(row.flags),
                    "counted": row.counted,
                }
                for row in self.rows
            },
            "distribution": dict(self.distribution),
            "stats": self.statistics.model_dump(mode="json"),
            "timings_ms": {k: round(self.timings_ms.get(k, 0.0), 2) for k in TIMING_KEYS},
        }


class PlateReader:
    """Detector + calibration + class map + the `core` maths, for one image at a time."""

    def __init__(
        self,
        detector: Detector,
        *,
        grid: CalibrationGrid | None = None,
        grid_source: str | None = None,
        plate_format: PlateFormat = PLATE_96,
        class_map: ClassMap | None = None,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        dilution: DilutionSettings | None = None,
        policy: CountingPolicy | None = None,
        protective_titre: float | None = None,
        fast_decode: bool = True,
        wells: WellClassifier | None = None,
        reading: ReadingMode = "tilted",
        review: ReviewSettings | None = None,
        well_threshold: float | None = None,
    ) -> None:
        self.detector = detector
        self.wells = wells
        self.reading: ReadingMode = (grid.reading if grid is not None else None) or reading
        self.review = review or getattr(detector.settings, "review", None) or ReviewSettings()
        self.fast_decode = fast_decode
        self.grid = grid
        self.grid_source = grid_source or ("calibration" if grid is not None else "uniform")
        self.plate_format = grid.plate_format if grid is not None else plate_format
        if class_map is None:
            overrides = dict(getattr(detector.settings, "class_map", {}) or {})
            try:
                class_map = ClassMap.for_model(detector.model.classes, overrides)
            except ClassMapError as exc:
                raise DetectorError(
                    f"{exc}. Set the detector's class_map, e.g. "
                    '{"Tear": "flowing", "Mat": "agglutinated", "Junk": "invalid"}.'
                ) from exc
        self.class_map = class_map
        self.min_confidence = min_confidence
        # The classifier's threshold on class probabilities (the detector's is min_confidence).
        self.well_threshold = min_confidence if well_threshold is None else well_threshold
        self.dilution = dilution or DilutionSettings()
        self.policy = policy or CountingPolicy()
        self.protective_titre = protective_titre

    def grid_for(self, width: int, height: int) -> CalibrationGrid:
        if self.grid is None:
            return CalibrationGrid.uniform(width, height, self.plate_format)
        return self.grid.scaled(width, height)

    def read(
        self,
        image_bgr: np.ndarray,
        *,
        decode_ms: float = 0.0,
        reduced_by: int = 1,
        full_size: tuple[int, int] | None = None,
    ) -> PlateReading:
        """Read a decoded frame. `reduced_by`/`full_size`: the frame was decoded at 1/n size
        (see `read_bytes`); detections are reported in full-size pixels."""
        start = time.perf_counter()
        if self.uses_classifier:
            return self._classify(image_bgr, start, decode_ms, reduced_by, full_size)
        result = self.detector.detect(image_bgr)
        width, height = full_size or (
            result.image_width * reduced_by,
            result.image_height * reduced_by,
        )
        detections = result.detections
        if reduced_by != 1:
            detections = [_enlarge(d, reduced_by, width, height) for d in detections]
        grid = self.grid_for(width, height)
        wells = call_wells(
            detections,
            grid,
            class_map=self.class_map,
            min_confidence=self.min_confidence,
        )
        calibrated = self.grid is not None
        reasons = review_reasons(
            wells,
            settings=self.review,
            blank=frame_is_blank(image_bgr, self.review.blank_frame_std),
            detections=detections if calibrated else None,
            grid=grid if calibrated else None,
        )
        return self._finish(
            wells=wells,
            grid=grid,
            width=width,
            height=height,
            detections=detections,
            reasons=reasons,
            timings={"decode": decode_ms, **result.timings_ms},
            start=start,
            model=self.detector.model.info(),
            backend=self.detector.backend,
        )

    @property
    def uses_classifier(self) -> bool:
        return self.wells is not None and self.grid is not None

    def _classify(
        self,
        image_bgr: np.ndarray,
        start: float,
        decode_ms: float,
        reduced_by: int,
        full_size: tuple[int, int] | None,
    ) -> PlateReading:
        assert self.wells is not None
        frame_h, frame_w = image_bgr.shape[:2]
        width, height = full_size or (frame_w * reduced_by, frame_h * reduced_by)
        grid = self.grid_for(width, height)
        result = self.wells.classify(
            image_bgr,
            grid,
            mode=self.reading,
            min_confidence=self.well_threshold,
            test_columns=self.dilution.test_columns(grid.plate_format),
            skip_matters=self.policy.skipped == "exclude",
        )
        blank = frame_is_blank(image_bgr, self.review.blank_frame_std)
        shifted = None
        if not blank and result.nowell >= self.review.not_a_plate_fraction * len(result.calls):
            shifted = self.wells.nowell_moved(
                image_bgr, grid, mode=self.reading, min_confidence=self.well_threshold
            )
        detections: list[Detection] = []
        det_agreement = None
        timings = {"decode": decode_ms, **result.timings_ms}
        if self.review.cross_check_detector:
            checked = self.detector.detect(image_bgr)
            detections = [
                _enlarge(d, reduced_by, width, height) if reduced_by != 1 else d
                for d in checked.detections
            ]
            theirs = call_wells(
                detections, grid, class_map=self.class_map, min_confidence=self.min_confidence
            )
            det_agreement = call_agreement(result.calls, theirs)
            timings["cross-check"] = sum(checked.timings_ms.values())
        reasons = review_reasons(
            # the gate judges the classifier's own calls, not the row decode's
            result.well_calls or result.calls,
            settings=self.review,
            blank=blank,
            nowell=result.nowell,
            agreement=result.agreement,
            shifted_nowell=shifted,
            detections=detections if self.review.cross_check_detector else None,
            grid=grid if self.review.cross_check_detector else None,
            detector_agreement=det_agreement,
        )
        return self._finish(
            wells=result.calls,
            grid=grid,
            width=width,
            height=height,
            detections=detections,
            reasons=reasons,
            timings=timings,
            start=start,
            model=self.wells.info(self.reading),
            backend=self.wells.backend,
            reader="classifier",
            agreement=result.agreement,
        )

    def _finish(
        self,
        *,
        wells: dict[str, WellCall],
        grid: CalibrationGrid,
        width: int,
        height: int,
        detections: list[Detection],
        reasons: list[str],
        timings: dict[str, float],
        start: float,
        model: dict[str, str],
        backend: str,
        reader: str = "detector",
        agreement: float | None = None,
    ) -> PlateReading:
        rows = row_results(wells, grid.plate_format, dilution=self.dilution, policy=self.policy)
        if reasons:
            rows = hold_for_review(rows)
        statistics = compute_statistics(rows, protective_titre=self.protective_titre)
        timings["total"] = timings.get("decode", 0.0) + (time.perf_counter() - start) * 1e3
        return PlateReading(
            model=model,
            backend=backend,
            image_width=width,
            image_height=height,
            grid=grid,
            grid_source=self.grid_source,
            detections=detections,
            wells=wells,
            rows=rows,
            distribution=distribution(rows, grid.plate_format.cols),
            statistics=statistics,
            timings_ms=timings,
            reader=reader,
            reading=self.reading if reader == "classifier" else None,
            needs_review=bool(reasons),
            review_reasons=tuple(reasons),
            precision_agreement=agreement,
        )

    def reduction(self, data: bytes) -> int:
        """The JPEG decode reduction for `data`: the classifier needs every well's crop at
        least its input size; the detector its letterboxed input."""
        if not self.fast_decode:
            return 1
        if self.uses_classifier:
            assert self.wells is not None and self.grid is not None
            return classifier_reduction(
                data, self.grid, self.wells.model.size, self.wells.model.crop_scale
            )
        spec = self.detector.model.input
        return reduction_for(data, spec.height, spec.width)

    def read_bytes(self, data: bytes, *, started: float | None = None) -> PlateReading:
        """Decode then read; a bad file raises `ImageDecodeError` with the reason.

        A JPEG much larger than the model input is decoded at 1/2, 1/4 or 1/8 size (libjpeg
        scales in the inverse DCT, far cheaper than decoding everything and resizing); the
        reading still reports full-size pixels.
        """
        start = time.perf_counter() if started is None else started
        factor = self.reduction(data)
        image = decode_image(data, reduce=factor)
        full_size = _full_size(data, image, factor)
        return self.read(
            image,
            decode_ms=(time.perf_counter() - start) * 1e3,
            reduced_by=factor,
            full_size=full_size,
        )

    def read_file(self, path: Path) -> PlateReading:
        """Read a file (reading it from disk counts as decode time)."""
        start = time.perf_counter()
        return self.read_bytes(read_file_bytes(path), started=start)


def _full_size(data: bytes, image: np.ndarray, factor: int) -> tuple[int, int] | None:
    """The frame's full (width, height) for a reduced decode, allowing for EXIF rotation."""
    if factor == 1:
        return None
    fmt = image_format(data)
    size = header_size(data, fmt) if fmt else None
    h, w = image.shape[:2]
    if size is not None:
        hw, hh = size
        for full_w, full_h in ((hw, hh), (hh, hw)):
            if -(-full_w // factor) == w and -(-full_h // factor) == h:
                return full_w, full_h
    return w * factor, h * factor


def _enlarge(det: Detection, factor: int, width: int, height: int) -> Detection:
    return det.model_copy(
        update={
            "x1": min(det.x1 * factor, width),
            "y1": min(det.y1 * factor, height),
            "x2": min(det.x2 * factor, width),
            "y2": min(det.y2 * factor, height),
        }
    )
