"""Row endpoints, titres and the counting policy (DOMAIN rule 3).

Terms used here:

* Columns are numbered as on the plate, 1-based. ``control_columns`` (none by default) are not
  part of the dilution series; the remaining *test columns* carry the dilutions in order, so
  the k-th test column (1-based) holds ``start_dilution × factor^(k − 1)``.
* A *readable* well is ``flowing`` or ``agglutinated``; ``invalid`` and ``unread`` wells are
  not readable.
* ``endpoint`` is the plate column number of the last flowing test column, 0 when none flows.

Row flags:

* ``skipped``: an agglutinated test well before the endpoint (a gap).
* ``no_inhibition``: endpoint 0, titre below the first dilution (``titre`` is None).
* ``all_inhibited``: every test column flows; the titre is censored at the last dilution.
* ``unread``: the row cannot be decided because a test well is not readable. Any well after
  the endpoint could be flowing (skips are allowed, so flowing wells need not be contiguous) and
  would move the endpoint; any well before it could be agglutinated and would make the row
  ``skipped``. So a row is decided only when every test well is readable (core/README.md,
  "row rule"); no tolerance is kept.

Counting (:class:`CountingPolicy`, safe default): ``no_inhibition`` rows count at
``start_dilution / 2``, censored rows at their bound, ``unread`` rows are excluded, ``skipped``
rows count. An excluded row keeps its endpoint and titre for display, has ``counted=False``
and an ``exclusion_reason`` naming the flag that excluded it (``unread`` first, then
``skipped``, ``no_inhibition``, ``all_inhibited``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.plate import PLATE_96, PlateFormat
from core.wells import WellCall, WellState

logger = logging.getLogger(__name__)

# ``review``: the plate as a whole needs review (edge plate-quality gate); its rows are shown
# but never counted (see :func:`hold_for_review`).
RowFlag = Literal["skipped", "no_inhibition", "all_inhibited", "unread", "review"]
ROW_FLAGS: tuple[RowFlag, ...] = (
    "skipped",
    "no_inhibition",
    "all_inhibited",
    "unread",
    "review",
)
# Which flag is reported as the reason when several would exclude a row.
_EXCLUSION_ORDER: tuple[RowFlag, ...] = ("unread", "skipped", "no_inhibition", "all_inhibited")
_READABLE: frozenset[WellState] = frozenset({"flowing", "agglutinated"})


class DilutionSettings(BaseModel):
    """The dilution series of a plate: 1:``start_dilution``, then × ``factor`` per column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_dilution: int = Field(default=10, ge=1, le=100_000)
    factor: int = Field(default=2, ge=2, le=10)
    control_columns: tuple[int, ...] = Field(default=(), max_length=24)

    @field_validator("control_columns")
    @classmethod
    def _sorted_unique(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(c < 1 for c in value):
            raise ValueError("control columns are plate column numbers, 1 or more")
        if len(set(value)) != len(value):
            raise ValueError("control columns must not repeat")
        return tuple(sorted(value))

    def test_columns(self, fmt: PlateFormat) -> tuple[int, ...]:
        """The plate column numbers (1-based) that carry the dilution series."""
        return _test_columns(tuple(self.control_columns), fmt.cols)

    def titres(self, fmt: PlateFormat) -> Mapping[int, int]:
        """Test column number -> the titre (dilution) of that column, read-only."""
        return _titres(self.start_dilution, self.factor, tuple(self.control_columns), fmt.cols)

    def counted_titres(self, fmt: PlateFormat) -> frozenset[float]:
        """Every value a counted titre may take: a dilution on the plate, or half the first
        (``no_inhibition`` counted at ``start_dilution / 2``)."""
        return _counted_titres(
            self.start_dilution, self.factor, tuple(self.control_columns), fmt.cols
        )


# Every wire message checks its rows against its dilution series (core.wire): computed once per
# distinct series, not once per row of every message. Errors are not cached (raised each time).
@functools.lru_cache(maxsize=256)
def _test_columns(control_columns: tuple[int, ...], n_cols: int) -> tuple[int, ...]:
    beyond = [c for c in control_columns if c > n_cols]
    if beyond:
        raise ValueError(f"control column(s) {beyond} are not on a {n_cols}-column plate")
    cols = tuple(c for c in range(1, n_cols + 1) if c not in control_columns)
    if not cols:
        raise ValueError("every column is a control column: no dilution series left")
    return cols


@functools.lru_cache(maxsize=256)
def _counted_titres(
    start_dilution: int, factor: int, control_columns: tuple[int, ...], n_cols: int
) -> frozenset[float]:
    titres = _titres(start_dilution, factor, control_columns, n_cols)
    return frozenset({start_dilution / 2.0, *(float(t) for t in titres.values())})


@functools.lru_cache(maxsize=256)
def _titres(
    start_dilution: int, factor: int, control_columns: tuple[int, ...], n_cols: int
) -> Mapping[int, int]:
    cols = _test_columns(control_columns, n_cols)
    return MappingProxyType(
        {col: int(start_dilution * factor**step) for step, col in enumerate(cols)}
    )


class CountingPolicy(BaseModel):
    """Whether flagged rows count towards statistics (safe defaults, see module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    no_inhibition: Literal["half_start", "exclude"] = "half_start"
    censored: Literal["bound", "exclude"] = "bound"
    unread: Literal["exclude"] = "exclude"
    skipped: Literal["count", "exclude"] = "count"


class RowResult(BaseModel):
    """One serum row. ``titre`` is None for ``no_inhibition`` rows (below the first dilution)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    row: int = Field(ge=0, le=25)
    label: str = Field(min_length=1, max_length=1)
    endpoint: int = Field(ge=0, le=99)
    titre: int | None = Field(default=None, ge=1)
    flags: tuple[RowFlag, ...] = ()
    counted: bool
    counted_titre: float | None = Field(default=None, gt=0)
    exclusion_reason: RowFlag | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RowResult:
        # A row that travels (wire, database) must not say two different things.
        if len(self.flags) > 1 and len(set(self.flags)) != len(self.flags):
            raise ValueError("flags: a flag is repeated")
        if (self.endpoint == 0) != (self.titre is None):
            raise ValueError("titre: must be empty exactly when the endpoint is 0")
        if self.counted != (self.exclusion_reason is None):
            raise ValueError("exclusion_reason: required exactly when the row is not counted")
        if self.counted != (self.counted_titre is not None):
            raise ValueError("counted_titre: required exactly when the row is counted")
        if self.exclusion_reason is not None and self.exclusion_reason not in self.flags:
            raise ValueError("exclusion_reason: must be one of the row's flags")
        return self


def titre_for(endpoint: int, dilution: DilutionSettings, fmt: PlateFormat = PLATE_96) -> int | None:
    """The titre at plate column ``endpoint`` (1-based); None for endpoint 0."""
    if endpoint == 0:
        return None
    titre = dilution.titres(fmt).get(endpoint)
    if titre is None:
        raise ValueError(f"column {endpoint} is not a test column of this plate")
    return titre


def _row_flags(states: list[WellState], endpoint_pos: int) -> list[RowFlag]:
    """Flags for one row; ``endpoint_pos`` is the 1-based test-column position, 0 for none."""
    flags: list[RowFlag] = []
    before = states[: max(endpoint_pos - 1, 0)]
    if "agglutinated" in before:
        flags.append("skipped")
    if endpoint_pos == 0:
        flags.append("no_inhibition")
    elif endpoint_pos == len(states):
        flags.append("all_inhibited")
    # Every test well could move the endpoint (after it) or the `skipped` flag (before it).
    if any(s not in _READABLE for s in states):
        flags.append("unread")
    return flags


def _counted_titre(
    titre: int | None, flags: list[RowFlag], dilution: DilutionSettings, policy: CountingPolicy
) -> tuple[float | None, RowFlag | None]:
    excluded = {
        "unread": True,
        "skipped": policy.skipped == "exclude",
        "no_inhibition": policy.no_inhibition == "exclude",
        "all_inhibited": policy.censored == "exclude",
    }
    for flag in _EXCLUSION_ORDER:
        if flag in flags and excluded[flag]:
            return None, flag
    if titre is None:  # no_inhibition counted at half the first dilution
        return dilution.start_dilution / 2.0, None
    return float(titre), None


def row_results(
    wells: Mapping[str, WellCall],
    fmt: PlateFormat,
    *,
    dilution: DilutionSettings | None = None,
    policy: CountingPolicy | None = None,
) -> list[RowResult]:
    """One :class:`RowResult` per plate row. A well missing from ``wells`` counts as unread."""
    dil = dilution if dilution is not None else DilutionSettings()
    pol = policy if policy is not None else CountingPolicy()
    test_cols = dil.test_columns(fmt)
    results: list[RowResult] = []
    for row, label in enumerate(fmt.row_labels):
        states: list[WellState] = []
        for col in test_cols:
            call = wells.get(fmt.well_id(row, col - 1))
            states.append(call.state if call is not None else "unread")
        flowing = [i for i, s in enumerate(states, start=1) if s == "flowing"]
        pos = flowing[-1] if flowing else 0
        endpoint = test_cols[pos - 1] if pos else 0
        titre = int(dil.start_dilution * dil.factor ** (pos - 1)) if pos else None
        flags = _row_flags(states, pos)
        counted_titre, reason = _counted_titre(titre, flags, dil, pol)
        results.append(
            RowResult(
                row=row,
                label=label,
                endpoint=endpoint,
                titre=titre,
                flags=tuple(flags),
                counted=reason is None,
                counted_titre=counted_titre,
                exclusion_reason=reason,
            )
        )
    return results


def hold_for_review(rows: list[RowResult]) -> list[RowResult]:
    """The rows of a plate that needs review: same endpoints, titres and flags plus
    ``review``, none counted (exclusion reason ``review``)."""
    held: list[RowResult] = []
    for row in rows:
        flags = row.flags if "review" in row.flags else (*row.flags, "review")
        held.append(
            RowResult.model_validate(
                {
                    **row.model_dump(),
                    "flags": flags,
                    "counted": False,
                    "counted_titre": None,
                    "exclusion_reason": "review",
                }
            )
        )
    return held
