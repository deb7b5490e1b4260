"""Builders shared by the core tests (stdlib + core only)."""

from __future__ import annotations

from collections.abc import Sequence

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.plate import PLATE_96, PlateFormat
from core.titre import DilutionSettings, RowResult, row_results
from core.wells import WellCall, WellState

LETTER = {"F": "flowing", "A": "agglutinated", "I": "invalid", "U": "unread"}


def det_in(
    grid: CalibrationGrid,
    row: int,
    col: int,
    name: str = "Flowing",
    conf: float = 0.9,
    *,
    dx: float = 0.0,
    half: float = 10.0,
) -> Detection:
    """A box centred in well (row, col), shifted by ``dx`` pixels."""
    x1, y1, x2, y2 = grid.cell_box(row, col)
    cx, cy = (x1 + x2) / 2 + dx, (y1 + y2) / 2
    return Detection(
        x1=cx - half,
        y1=cy - half,
        x2=cx + half,
        y2=cy + half,
        confidence=conf,
        class_id=0,
        class_name=name,
    )


def calls_from_rows(patterns: Sequence[str], fmt: PlateFormat = PLATE_96) -> dict[str, WellCall]:
    """Well calls from strings like ``"FFFAAAAAAAAA"`` (F/A/I/U per column), one per row."""
    calls: dict[str, WellCall] = {}
    for row in range(fmt.rows):
        pattern = patterns[row] if row < len(patterns) else "A" * fmt.cols
        assert len(pattern) == fmt.cols, pattern
        for col, letter in enumerate(pattern):
            state: WellState = LETTER[letter]  # type: ignore[assignment]
            well_id = fmt.well_id(row, col)
            calls[well_id] = WellCall(
                well_id=well_id,
                row=row,
                col=col,
                state=state,
                confidence=None if state == "unread" else 0.9,
            )
    return calls


def rows_for(
    patterns: Sequence[str],
    fmt: PlateFormat = PLATE_96,
    dilution: DilutionSettings | None = None,
) -> list[RowResult]:
    return row_results(calls_from_rows(patterns, fmt), fmt, dilution=dilution)


def endpoint_pattern(endpoint: int | None, cols: int = 12) -> str:
    """A clean row ending at ``endpoint`` (None: no flowing well)."""
    e = endpoint or 0
    return "F" * e + "A" * (cols - e)
