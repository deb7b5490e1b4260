"""`PlateReader`: one plate image in, well calls + row titres + statistics out.

    reader = PlateReader(create_detector(settings), grid=saved_grid_or_None)
    reading = reader.read_file(Path("plate.jpg"))      # or read_bytes(data) / read(image_bgr)
    reading.wells["A1"].state, reading.rows[0].titre, reading.statistics.gmt
    reading.to_dict()                                  # the JSON shape `analyze --json` prints

Steps: decode (`decode_image`; a bad file raises `ImageDecodeError`) -> detect (any backend) ->
`core.wells.call_wells` on the calibration grid scaled to the frame (a uniform grid over the
frame when there is no calibration) -> `core.titre.row_results` -> `core.stats`. The detector's
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
from core.titre import CountingPolicy, DilutionSettings, RowResult, row_results
from core.wells import DEFAULT_MIN_CONFIDENCE, ClassMap, ClassMapError, WellCall, call_wells
from edge.detect.base import Detector
from edge.detect.errors import DetectorError
from edge.detect.imageio import decode_image, read_image

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; a well without any box reports confidence 0.0."""
        return {
            "model": dict(self.model),
            "backend": self.backend,
            "image_size": [self.image_width, self.image_height],
            "calibration": {"source": self.grid_source, "grid_id": self.grid.grid_id},
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
    ) -> None:
        self.detector = detector
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
        self.dilution = dilution or DilutionSettings()
        self.policy = policy or CountingPolicy()
        self.protective_titre = protective_titre

    def grid_for(self, width: int, height: int) -> CalibrationGrid:
        if self.grid is None:
            return CalibrationGrid.uniform(width, height, self.plate_format)
        return self.grid.scaled(width, height)

    def read(self, image_bgr: np.ndarray, *, decode_ms: float = 0.0) -> PlateReading:
        start = time.perf_counter()
        result = self.detector.detect(image_bgr)
        grid = self.grid_for(result.image_width, result.image_height)
        wells = call_wells(
            result.detections,
            grid,
            class_map=self.class_map,
            min_confidence=self.min_confidence,
        )
        rows = row_results(wells, grid.plate_format, dilution=self.dilution, policy=self.policy)
        statistics = compute_statistics(rows, protective_titre=self.protective_titre)
        timings = {"decode": decode_ms, **result.timings_ms}
        timings["total"] = decode_ms + (time.perf_counter() - start) * 1e3
        return PlateReading(
            model=self.detector.model.info(),
            backend=self.detector.backend,
            image_width=result.image_width,
            image_height=result.image_height,
            grid=grid,
            grid_source=self.grid_source,
            detections=result.detections,
            wells=wells,
            rows=rows,
            distribution=distribution(rows, grid.plate_format.cols),
            statistics=statistics,
            timings_ms=timings,
        )

    def read_bytes(self, data: bytes) -> PlateReading:
        """Decode then read; a bad file raises `ImageDecodeError` with the reason."""
        start = time.perf_counter()
        image = decode_image(data)
        return self.read(image, decode_ms=(time.perf_counter() - start) * 1e3)

    def read_file(self, path: Path) -> PlateReading:
        start = time.perf_counter()
        image = read_image(path)
        return self.read(image, decode_ms=(time.perf_counter() - start) * 1e3)
