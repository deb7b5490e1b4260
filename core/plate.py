"""Plate formats and well identifiers.

Rows and columns are 0-based indices in code; labels are what a person reads on the plate
(rows ``A``.., columns ``1``..). Well ids join the two: ``A1`` is row 0, column 0.
"""

from __future__ import annotations

import logging
import re
import string

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

_WELL_RE = re.compile(r"^([A-Z]+)([0-9]+)$")


class WellIdError(ValueError):
    """A well id that does not name a well of the plate format."""


class PlateFormat(BaseModel):
    """A rectangular plate: ``rows`` × ``cols`` wells."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(ge=1, le=26)
    cols: int = Field(ge=1, le=99)

    @property
    def n_wells(self) -> int:
        return self.rows * self.cols

    @property
    def row_labels(self) -> tuple[str, ...]:
        return tuple(string.ascii_uppercase[: self.rows])

    @property
    def col_labels(self) -> tuple[str, ...]:
        return tuple(str(c) for c in range(1, self.cols + 1))

    def well_id(self, row: int, col: int) -> str:
        """The id of the well at 0-based ``row``, ``col`` (``well_id(1, 6) == "B7"``)."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise WellIdError(
                f"row {row}, column {col} is outside a {self.n_wells}-well plate "
                f"(rows 0..{self.rows - 1}, columns 0..{self.cols - 1})"
            )
        return f"{string.ascii_uppercase[row]}{col + 1}"

    def well_ids(self) -> list[str]:
        """Every well id in plate order (row by row: A1, A2, .., A12, B1, ..)."""
        return [self.well_id(r, c) for r in range(self.rows) for c in range(self.cols)]

    def parse_well_id(self, well_id: str) -> tuple[int, int]:
        """``"B7"`` -> ``(1, 6)``; a malformed or out-of-plate id raises :class:`WellIdError`."""
        match = _WELL_RE.match(well_id.strip().upper()) if isinstance(well_id, str) else None
        if match is None:
            raise WellIdError(f"{well_id!r} is not a well id (expected a row letter and a number)")
        letters, digits = match.groups()
        if len(letters) != 1 or digits.startswith("0"):
            raise WellIdError(f"{well_id!r} is not a well id (expected e.g. A1 or H12)")
        row = string.ascii_uppercase.index(letters)
        col = int(digits) - 1
        if row >= self.rows or col >= self.cols:
            raise WellIdError(
                f"{well_id!r} is not on a {self.n_wells}-well plate "
                f"(rows A..{self.row_labels[-1]}, columns 1..{self.cols})"
            )
        return row, col


PLATE_96 = PlateFormat(rows=8, cols=12)
PLATE_384 = PlateFormat(rows=16, cols=24)
_FORMATS = {PLATE_96.n_wells: PLATE_96, PLATE_384.n_wells: PLATE_384}
SUPPORTED_WELL_COUNTS: tuple[int, ...] = tuple(sorted(_FORMATS))


def plate_format(n_wells: int) -> PlateFormat:
    """The plate format with ``n_wells`` wells (96 or 384)."""
    try:
        return _FORMATS[n_wells]
    except (KeyError, TypeError):
        raise ValueError(
            f"unsupported plate format {n_wells!r}: expected one of {SUPPORTED_WELL_COUNTS}"
        ) from None


def format_for_grid(n_cols: int, n_rows: int) -> PlateFormat | None:
    """The known format with ``n_cols`` columns and ``n_rows`` rows of wells, if any."""
    for fmt in _FORMATS.values():
        if fmt.cols == n_cols and fmt.rows == n_rows:
            return fmt
    return None
