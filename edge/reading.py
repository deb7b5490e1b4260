"""Turns one decoded plate image into well calls, rows, distribution and statistics.

The only place the pipeline touches the detector and the `core` maths, so the runtime settings a
supervisor changes (dilution, threshold, protective titre) apply to the very next plate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.calibration import CalibrationGrid
from core.plate import PLATE_96, PlateFormat
from core.stats import Statistics, compute_statistics, distribution
from core.titre import CountingPolicy, DilutionSettings, RowResult, row_results
from core.wells import ClassMap, WellCall, call_wells
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
    min_confidence: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)


def dilution_of(params: RuntimeSettings) -> DilutionSettings:
    return DilutionSettings(
        start_dilution=params.start_dilution,
        factor=params.dilution_factor,
        control_columns=tuple(params.control_columns),
    )


def grid_for(image: np.ndarray, grid: CalibrationGrid | None) -> CalibrationGrid:
    h, w = image.shape[:2]
    if grid is None:
        return CalibrationGrid.uniform(w, h, PLATE_96)
    if (grid.image_width, grid.image_height) != (w, h):
        return grid.scaled(w, h)
    return grid


def detect(detector: Any, image: np.ndarray) -> tuple[list[Any], dict[str, float]]:
    """Run the detector; accepts `edge.detect`'s DetectionResult or a plain list."""
    t0 = time.perf_counter()
    result = detector.detect(image)
    infer_ms = (time.perf_counter() - t0) * 1000.0
    detections = getattr(result, "detections", result)
    timings = dict(getattr(result, "timings", None) or getattr(result, "timings_ms", None) or {})
    timings = {str(k): float(v) for k, v in timings.items()}
    timings.setdefault("detect", infer_ms)
    return list(detections), timings


def read_plate(
    detector: Any,
    image: np.ndarray,
    *,
    grid: CalibrationGrid | None,
    params: RuntimeSettings,
    class_map: ClassMap | None = None,
) -> PlateResult:
    detections, timings = detect(detector, image)
    t0 = time.perf_counter()
    g = grid_for(image, grid)
    fmt = g.plate_format
    wells = call_wells(
        detections, g, class_map=class_map or ClassMap(), min_confidence=params.min_confidence
    )
    dil = dilution_of(params)
    rows = row_results(wells, fmt, dilution=dil, policy=CountingPolicy())
    stats = compute_statistics(rows, protective_titre=params.protective_titre)
    dist = distribution(rows, fmt.cols)
    timings["wells"] = (time.perf_counter() - t0) * 1000.0
    return PlateResult(
        wells=wells,
        rows=rows,
        statistics=stats,
        distribution=dist,
        detections=detections,
        grid=g,
        fmt=fmt,
        dilution=dil,
        min_confidence=params.min_confidence,
        timings_ms=timings,
    )


def model_info(detector: Any) -> dict[str, str]:
    """Name/version/sha256/backend of the loaded model, as far as the detector tells."""
    info: dict[str, str] = {}
    for source in (detector, getattr(detector, "model", None), getattr(detector, "manifest", None)):
        if source is None:
            continue
        for key in ("name", "version", "sha256", "backend"):
            value = getattr(source, key, None)
            if isinstance(value, str) and key not in info:
                info[key] = value
    info.setdefault("backend", type(detector).__name__)
    return info
