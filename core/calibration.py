"""The calibration grid: pixel lines that cut a plate image into wells (DOMAIN rule 2).

A grid holds ``cols + 1`` vertical lines (``columns``) and ``rows + 1`` horizontal lines
(``rows``) in pixels of the frame it was made on (``image_width`` × ``image_height``). It scales
to other frame sizes. The old system's file (``bounds``, ``columns``, ``rows``, ``image_width``,
``image_height``, ``updated_at``, ``format_version: 3``) loads unchanged through
:meth:`CalibrationGrid.from_legacy`; our own saved form is the model's JSON
(:meth:`CalibrationGrid.to_json`). :meth:`CalibrationGrid.from_json` reads either.

Every check names the bad value, e.g. ``columns[4] = 500.0 is not greater than columns[3] =
515.0``. A well is the half-open cell ``[columns[c], columns[c+1]) × [rows[r], rows[r+1])``;
the last column and row also include their far line, so a point exactly on an inner line
belongs to the well right of / below it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.plate import PlateFormat, format_for_grid

logger = logging.getLogger(__name__)

LEGACY_FORMAT_VERSION = 3
# The old system rounded its bounds to whole pixels; allow that much disagreement.
_BOUNDS_TOLERANCE_PX = 1.0


class CalibrationError(ValueError):
    """A calibration that cannot be used; the message names the bad value."""


def _fmt(value: float) -> str:
    return repr(float(value))


def _check_axis(name: str, lines: Sequence[float], limit: int, limit_name: str) -> None:
    for i, value in enumerate(lines):
        if not math.isfinite(value):
            raise CalibrationError(f"{name}[{i}] = {_fmt(value)} is not a finite number")
        if value < 0 or value > limit:
            raise CalibrationError(
                f"{name}[{i}] = {_fmt(value)} lies outside the image (0..{limit} = {limit_name})"
            )
        if i and value <= lines[i - 1]:
            raise CalibrationError(
                f"{name}[{i}] = {_fmt(value)} is not greater than "
                f"{name}[{i - 1}] = {_fmt(lines[i - 1])}"
            )


def check_lines(
    columns: Sequence[float], rows: Sequence[float], image_width: int, image_height: int
) -> PlateFormat:
    """Validate grid lines; return the plate format they describe or raise CalibrationError."""
    for name, size in (("image_width", image_width), ("image_height", image_height)):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise CalibrationError(f"{name} = {size!r} is not a positive whole number of pixels")
    fmt = format_for_grid(len(columns) - 1, len(rows) - 1)
    if fmt is None:
        raise CalibrationError(
            f"columns has {len(columns)} lines and rows has {len(rows)}: a 96-well plate needs "
            "13 column lines and 9 row lines, a 384-well plate 25 and 17"
        )
    _check_axis("columns", columns, image_width, "image_width")
    _check_axis("rows", rows, image_height, "image_height")
    return fmt


class CalibrationGrid(BaseModel):
    """Grid lines in pixels of an ``image_width`` × ``image_height`` frame."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: tuple[float, ...]
    rows: tuple[float, ...]
    image_width: int = Field(strict=True)
    image_height: int = Field(strict=True)
    updated_at: datetime | None = None
    # How the plates read through this grid are read (``tilted`` V-bottom tear-drops, or
    # ``untilted`` U-bottom buttons and mats); None: the appliance's runtime setting decides.
    # Not part of ``grid_id``: the same lines are the same grid.
    reading: Literal["tilted", "untilted"] | None = None

    def __init__(self, **data: Any) -> None:
        # Callers catch CalibrationError; pydantic would wrap ours in a ValidationError.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _calibration_error(exc) from None

    @model_validator(mode="after")
    def _valid_lines(self) -> CalibrationGrid:
        check_lines(self.columns, self.rows, self.image_width, self.image_height)
        return self

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_legacy(cls, data: Mapping[str, Any]) -> CalibrationGrid:
        """Load the old system's calibration dict (``format_version: 3``) unchanged."""
        if not isinstance(data, Mapping):
            raise CalibrationError(
                f"a calibration must be a JSON object, not {type(data).__name__}"
            )
        version = data.get("format_version")
        if version != LEGACY_FORMAT_VERSION:
            raise CalibrationError(
                f"format_version = {version!r} is not supported (expected {LEGACY_FORMAT_VERSION})"
            )
        unknown = sorted(set(data) - {"bounds", "format_version", *cls.model_fields})
        if unknown:
            raise CalibrationError(f"unknown calibration field(s): {', '.join(unknown)}")
        for key in ("columns", "rows", "image_width", "image_height"):
            if key not in data:
                raise CalibrationError(f"the calibration has no {key!r}")
        columns, rows = _float_list(data, "columns"), _float_list(data, "rows")
        grid = cls(
            columns=columns,
            rows=rows,
            image_width=_whole(data, "image_width"),
            image_height=_whole(data, "image_height"),
            updated_at=data.get("updated_at"),
            reading=data.get("reading"),
        )
        if "bounds" in data:
            _check_bounds(data["bounds"], grid)
        return grid

    @classmethod
    def from_json(cls, text: str | bytes) -> CalibrationGrid:
        """Read either the legacy file or our own saved form (:meth:`to_json`)."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CalibrationError(f"the calibration is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CalibrationError(
                f"a calibration must be a JSON object, not {type(data).__name__}"
            )
        if "format_version" in data or "bounds" in data:
            return cls.from_legacy(data)
        return cls(**data)

    @classmethod
    def uniform(
        cls, width: int, height: int, fmt: PlateFormat, margin_frac: float = 0.03
    ) -> CalibrationGrid:
        """Evenly spaced lines with a margin of ``margin_frac`` of the frame on every side."""
        if not (0.0 <= margin_frac < 0.5):
            raise CalibrationError(f"margin_frac = {margin_frac!r} must be in [0, 0.5)")
        return cls(
            columns=_spaced(width, fmt.cols, margin_frac),
            rows=_spaced(height, fmt.rows, margin_frac),
            image_width=width,
            image_height=height,
        )

    # --- output -------------------------------------------------------------------------
    def to_legacy(self) -> dict[str, Any]:
        """The old system's dict form (loads back through :meth:`from_legacy`)."""
        stamp = self.updated_at.isoformat().replace("+00:00", "Z") if self.updated_at else None
        return {
            "bounds": {
                "left": self.columns[0],
                "right": self.columns[-1],
                "top": self.rows[0],
                "bottom": self.rows[-1],
            },
            "columns": list(self.columns),
            "rows": list(self.rows),
            "image_width": self.image_width,
            "image_height": self.image_height,
            "updated_at": stamp,
            "format_version": LEGACY_FORMAT_VERSION,
            **({"reading": self.reading} if self.reading else {}),
        }

    def to_json(self) -> str:
        """Our own saved form."""
        return self.model_dump_json()

    # --- geometry -----------------------------------------------------------------------
    @property
    def plate_format(self) -> PlateFormat:
        fmt = format_for_grid(len(self.columns) - 1, len(self.rows) - 1)
        assert fmt is not None  # guaranteed by the validator
        return fmt

    @property
    def grid_id(self) -> str:
        """sha256 of the canonical lines and frame size (3 decimals): same grid, same id."""
        canonical = json.dumps(
            {
                "columns": [f"{v:.3f}" for v in self.columns],
                "rows": [f"{v:.3f}" for v in self.rows],
                "image_width": self.image_width,
                "image_height": self.image_height,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def scaled(self, width: int, height: int) -> CalibrationGrid:
        """The same grid for a ``width`` × ``height`` frame."""
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise CalibrationError(f"width = {width!r} is not a positive whole number of pixels")
        if isinstance(height, bool) or not isinstance(height, int) or height <= 0:
            raise CalibrationError(f"height = {height!r} is not a positive whole number of pixels")
        if (width, height) == (self.image_width, self.image_height):
            return self
        sx, sy = width / self.image_width, height / self.image_height
        return CalibrationGrid(
            columns=tuple(min(v * sx, float(width)) for v in self.columns),
            rows=tuple(min(v * sy, float(height)) for v in self.rows),
            image_width=width,
            image_height=height,
            updated_at=self.updated_at,
            reading=self.reading,
        )

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """The (row, col) of the well containing the point, or None outside the grid."""
        col = _interval(self.columns, x)
        row = _interval(self.rows, y)
        if col is None or row is None:
            return None
        return row, col

    def cell_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """The pixel box ``(x1, y1, x2, y2)`` of the well at 0-based ``row``, ``col``."""
        fmt = self.plate_format
        if not (0 <= row < fmt.rows and 0 <= col < fmt.cols):
            raise IndexError(f"row {row}, column {col} is outside the {fmt.n_wells}-well grid")
        return self.columns[col], self.rows[row], self.columns[col + 1], self.rows[row + 1]


def _interval(lines: tuple[float, ...], value: float) -> int | None:
    if not math.isfinite(value) or value < lines[0] or value > lines[-1]:
        return None
    return min(bisect.bisect_right(lines, value) - 1, len(lines) - 2)


def _spaced(size: int, cells: int, margin_frac: float) -> tuple[float, ...]:
    start, stop = size * margin_frac, size * (1.0 - margin_frac)
    step = (stop - start) / cells
    return (*(start + i * step for i in range(cells)), stop)


def _float_list(data: Mapping[str, Any], key: str) -> tuple[float, ...]:
    values = data[key]
    if not isinstance(values, list):
        raise CalibrationError(f"{key} must be a list of numbers, not {type(values).__name__}")
    out = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CalibrationError(f"{key}[{i}] = {value!r} is not a number")
        out.append(float(value))
    return tuple(out)


def _whole(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CalibrationError(f"{key} = {value!r} is not a whole number of pixels")
    return value


def _check_bounds(bounds: Any, grid: CalibrationGrid) -> None:
    if not isinstance(bounds, Mapping):
        raise CalibrationError(f"bounds = {bounds!r} is not an object")
    expected = {
        "left": grid.columns[0],
        "right": grid.columns[-1],
        "top": grid.rows[0],
        "bottom": grid.rows[-1],
    }
    for key, line in expected.items():
        value = bounds.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CalibrationError(f"bounds.{key} = {value!r} is not a number")
        if not math.isfinite(value) or abs(value - line) > _BOUNDS_TOLERANCE_PX:
            raise CalibrationError(
                f"bounds.{key} = {_fmt(value)} disagrees with the outer grid line {_fmt(line)}"
            )


def _calibration_error(exc: ValidationError) -> CalibrationError:
    first = exc.errors()[0]
    ctx = first.get("ctx") or {}
    original = ctx.get("error")
    if isinstance(original, CalibrationError):
        return original
    where = ".".join(str(part) for part in first["loc"]) or "calibration"
    shown = repr(first.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CalibrationError(f"{where}: {first['msg']} (got {shown})")
