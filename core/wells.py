"""Well calls: which state each well of a plate is in (DOMAIN rule 1).

* A detection belongs to the well whose calibrated cell contains the **box centre** (boxes that
  cross a grid line are no longer dropped, as the old system did).
* Several boxes in one well: the highest confidence decides and the well is flagged
  ``multiple`` (equal confidences go to ``flowing``, then ``agglutinated``, then ``invalid``,
  then class name and box, so the result never depends on detection order).
* No detection: ``unread``. Best confidence below ``min_confidence``: ``unread`` with flag
  ``low_confidence`` (the best box, its class and confidence are kept for display; never
  guessed into a state).
* Model class names map to states through a :class:`ClassMap`. Decision: an unknown class name
  is an **error**, not silently ``invalid``: build the map with :meth:`ClassMap.for_model` from
  the model's class list at start-up, which raises :class:`ClassMapError` naming the classes it
  cannot place; :func:`call_wells` raises the same error for a detection whose class is unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.calibration import CalibrationGrid
from core.detection import Detection

logger = logging.getLogger(__name__)

WellState = Literal["flowing", "agglutinated", "invalid", "unread"]
DetectedState = Literal["flowing", "agglutinated", "invalid"]
# ``no_well``: the well classifier saw no plate well centred in the crop (the grid is off, or
# the frame is not a plate); the well is ``unread``.
WellFlag = Literal["multiple", "low_confidence", "no_well"]
WELL_STATES: tuple[WellState, ...] = ("flowing", "agglutinated", "invalid", "unread")
WELL_FLAGS: tuple[WellFlag, ...] = ("multiple", "low_confidence", "no_well")
DEFAULT_MIN_CONFIDENCE = 0.5

_DEFAULT_NAMES: dict[str, DetectedState] = {
    **dict.fromkeys(("flowing", "tear-drop", "teardrop", "streaming"), "flowing"),
    **dict.fromkeys(("agglutinated", "mat", "shield"), "agglutinated"),
    **dict.fromkeys(("invalid", "empty", "bubble", "debris"), "invalid"),
}
_STATE_RANK = {"flowing": 0, "agglutinated": 1, "invalid": 2}


class ClassMapError(ValueError):
    """A model class name that the class map cannot place."""


class ClassMap(BaseModel):
    """Model class name -> well state, matched case-insensitively."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: dict[str, DetectedState] = Field(default_factory=lambda: dict(_DEFAULT_NAMES))

    @field_validator("names")
    @classmethod
    def _no_conflicts(cls, value: dict[str, DetectedState]) -> dict[str, DetectedState]:
        seen: dict[str, DetectedState] = {}
        for key, state in value.items():
            folded = key.casefold().strip()
            if not folded:
                raise ValueError("a class name in the class map is empty")
            if seen.get(folded, state) != state:
                raise ValueError(f"class {key!r} maps to both {seen[folded]!r} and {state!r}")
            seen[folded] = state
        return value

    @classmethod
    def default(cls) -> ClassMap:
        return cls()

    @classmethod
    def for_model(
        cls, class_names: Iterable[str], extra: Mapping[str, DetectedState] | None = None
    ) -> ClassMap:
        """The default map (plus ``extra``), checked against a model's class list."""
        names = dict(_DEFAULT_NAMES)
        for key, state in (extra or {}).items():
            names[key.casefold()] = state
        built = cls(names=names)
        unknown = [n for n in class_names if n.casefold().strip() not in built._folded]
        if unknown:
            raise ClassMapError(
                f"model class(es) {', '.join(repr(n) for n in unknown)} map to no well state; "
                "add them to the class map (flowing / agglutinated / invalid)"
            )
        return built

    @cached_property
    def _folded(self) -> dict[str, DetectedState]:
        # Built once per (frozen) map: state_for runs for every detection of every plate.
        return {k.casefold().strip(): v for k, v in self.names.items()}

    def state_for(self, class_name: str) -> DetectedState:
        try:
            return self._folded[class_name.casefold().strip()]
        except KeyError:
            raise ClassMapError(
                f"detection class {class_name!r} maps to no well state; "
                f"known classes: {', '.join(sorted(self.names))}"
            ) from None


class WellCall(BaseModel):
    """The call for one well. ``confidence``/``box``/``class_name`` belong to the deciding box."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    well_id: str = Field(min_length=2, max_length=4)
    row: int = Field(ge=0)
    col: int = Field(ge=0)
    state: WellState
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    box: tuple[float, float, float, float] | None = None
    class_name: str | None = Field(default=None, max_length=64)
    flags: tuple[WellFlag, ...] = ()
    n_detections: int = Field(default=0, ge=0)


def _best(detections: list[Detection], class_map: ClassMap) -> tuple[Detection, DetectedState]:
    scored = [(d, class_map.state_for(d.class_name)) for d in detections]
    # Highest confidence; ties broken by state, then name, then box: order-independent.
    return min(
        scored,
        key=lambda ds: (-ds[0].confidence, _STATE_RANK[ds[1]], ds[0].class_name, ds[0].box),
    )


def call_wells(
    detections: Iterable[Detection],
    grid: CalibrationGrid,
    *,
    class_map: ClassMap | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> dict[str, WellCall]:
    """Call every well of the grid's plate; the dict is in plate order (A1, A2, ..).

    ``grid`` must be in the pixels of the frame the detections come from: use
    ``grid.scaled(frame_width, frame_height)`` first when they differ.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence = {min_confidence!r} must be between 0 and 1")
    cmap = class_map if class_map is not None else ClassMap.default()
    fmt = grid.plate_format
    per_cell: dict[tuple[int, int], list[Detection]] = {}
    outside = 0
    for det in detections:
        cmap.state_for(det.class_name)  # unknown classes fail even outside the grid
        cell = grid.cell_at(*det.center)
        if cell is None:
            outside += 1
            continue
        per_cell.setdefault(cell, []).append(det)
    if outside:
        logger.info("%s detection(s) had their centre outside the calibrated grid", outside)

    calls: dict[str, WellCall] = {}
    for row in range(fmt.rows):
        for col in range(fmt.cols):
            well_id = fmt.well_id(row, col)
            found = per_cell.get((row, col), [])
            if not found:
                calls[well_id] = WellCall(well_id=well_id, row=row, col=col, state="unread")
                continue
            best, state = _best(found, cmap)
            flags: list[WellFlag] = []
            if len(found) > 1:
                flags.append("multiple")
            final: WellState = state
            if best.confidence < min_confidence:
                final = "unread"
                flags.append("low_confidence")
            calls[well_id] = WellCall(
                well_id=well_id,
                row=row,
                col=col,
                state=final,
                confidence=best.confidence,
                box=best.box,
                class_name=best.class_name,
                flags=tuple(flags),
                n_detections=len(found),
            )
    return calls


def outside_grid(detections: Iterable[Detection], grid: CalibrationGrid) -> list[Detection]:
    """Detections whose centre is outside every well (shown, never silently lost)."""
    return [d for d in detections if grid.cell_at(*d.center) is None]
