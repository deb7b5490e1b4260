"""The saved calibration grid: a file in the old system's format (so `analyze` and older tools
read it too) plus a history table saying who changed it when; and a grid proposed from the
detections of a frame."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlite_utils import Database

from core.calibration import CalibrationError, CalibrationGrid
from core.plate import PLATE_96, PlateFormat
from edge.db import admin
from edge.db.store import Store
from edge.errors import InvalidInput
from edge.files.fsutil import atomic_write
from edge.schemas import CalibrationOut

if TYPE_CHECKING:
    from edge.capture import CaptureSource
    from edge.ports import Detecting, Gate, Host

logger = logging.getLogger(__name__)


def load(path: Path) -> CalibrationGrid | None:
    if not path.is_file():
        return None
    try:
        return CalibrationGrid.from_json(path.read_text(encoding="utf-8"))
    except (OSError, CalibrationError) as exc:
        # A broken file must not stop the appliance: run on the uniform grid and say so.
        logger.error("calibration %s cannot be used (%s); using a uniform grid", path, exc)
        return None


def save(path: Path, grid: CalibrationGrid) -> None:
    stamped = grid.model_copy(update={"updated_at": datetime.now(timezone.utc)})
    atomic_write(path, json.dumps(stamped.to_legacy(), indent=2).encode("utf-8"))


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def record(db: Database, grid: CalibrationGrid | None, actor: str) -> None:
    admin.record_calibration(
        db, grid.grid_id if grid else None, grid.to_json() if grid else None, actor
    )


def describe(store: Store, grid: CalibrationGrid | None) -> CalibrationOut | None:
    if grid is None:
        return None
    row = admin.calibration_change(store.read(), grid.grid_id)
    updated_at = (
        datetime.fromisoformat(row[0]) if row else grid.updated_at or datetime.now(timezone.utc)
    )
    return CalibrationOut(
        grid_id=grid.grid_id,
        columns=list(grid.columns),
        rows=list(grid.rows),
        image_width=grid.image_width,
        image_height=grid.image_height,
        reading=grid.reading,
        updated_at=updated_at,
        updated_by=row[1] if row else "file",
    )


def _clusters(values: Sequence[float], k: int) -> list[float]:
    """Means of `k` 1-D clusters, split at the k-1 widest gaps of the sorted values."""
    pts = sorted(values)
    gaps = sorted(range(1, len(pts)), key=lambda i: pts[i] - pts[i - 1], reverse=True)[: k - 1]
    cuts = [0, *sorted(gaps), len(pts)]
    return [sum(pts[a:b]) / (b - a) for a, b in itertools.pairwise(cuts)]


def _lines(centres: list[float], limit: int) -> tuple[float, ...]:
    mids = [(a + b) / 2 for a, b in itertools.pairwise(centres)]
    first = centres[0] - (centres[1] - centres[0]) / 2
    last = centres[-1] + (centres[-1] - centres[-2]) / 2
    return (max(0.0, first), *mids, min(float(limit), last))


def propose(
    detections: Sequence[Any], width: int, height: int, fmt: PlateFormat = PLATE_96
) -> CalibrationGrid:
    """A grid whose cells are centred on the detected wells (at least one well per row and
    per column must be detected, and the clusters must be clearly separated)."""
    centres = [d.center for d in detections]
    xs, ys = [c[0] for c in centres], [c[1] for c in centres]
    if len({round(x) for x in xs}) < fmt.cols or len({round(y) for y in ys}) < fmt.rows:
        raise InvalidInput(
            code="calibration_not_found",
            message=f"Only {len(centres)} wells were detected: not enough to place a "
            f"{fmt.rows}x{fmt.cols} grid. Check the plate is in view and well lit, then retry.",
        )
    cols = _clusters(xs, fmt.cols)
    rows = _clusters(ys, fmt.rows)
    try:
        return CalibrationGrid(
            columns=_lines(cols, width),
            rows=_lines(rows, height),
            image_width=width,
            image_height=height,
        )
    except CalibrationError as exc:
        raise InvalidInput(
            code="calibration_not_found",
            message=f"The detected wells do not form a regular grid ({exc}). Retry or calibrate "
            "by hand.",
        ) from exc


class CalibrationService:
    """The grid in force: loaded when the store opens, set or removed by a supervisor (file,
    history row and audit together), or proposed from a frame's detections."""

    def __init__(
        self,
        host: Host,
        gate: Gate,
        reading: Detecting,
        source: CaptureSource,
    ) -> None:
        self._host = host
        self._gate = gate
        self._reading = reading
        self._source = source
        self.grid: CalibrationGrid | None = None

    @property
    def _path(self) -> Path:
        return self._host.settings.resolved_calibration_path

    def load(self) -> None:
        self.grid = load(self._path)

    def get(self) -> CalibrationOut | None:
        return describe(self._host.store, self.grid)

    def set(self, grid: CalibrationGrid, actor: str) -> CalibrationOut:
        save(self._path, grid)
        with self._host.store.write() as db:
            record(db, grid, actor)
            admin.audit(db, actor=actor, action="calibration.set", detail={"grid_id": grid.grid_id})
        self.grid = grid
        self._host.events.publish("calibration.updated", {"grid_id": grid.grid_id})
        out = self.get()
        assert out is not None
        return out

    def delete(self, actor: str) -> None:
        remove(self._path)
        with self._host.store.write() as db:
            record(db, None, actor)
            admin.audit(db, actor=actor, action="calibration.delete", detail={})
        self.grid = None
        self._host.events.publish("calibration.updated", {"grid_id": None})

    def propose(self) -> CalibrationGrid:
        """A grid from a fresh frame of the camera."""
        self._gate.require_started()
        frame = self._source.grab()
        image = frame.image if frame.image is not None else self._reading.decode(frame.data)
        return self.propose_from_image(image)

    def propose_from_image(self, image: np.ndarray) -> CalibrationGrid:
        from edge.detect.plate import detect

        detections, _ = detect(self._reading.require_detector(), image)
        return propose(detections, image.shape[1], image.shape[0])
