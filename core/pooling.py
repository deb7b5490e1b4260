"""Sample pooling: a sample's figures over its *current* plate reads (DOMAIN rule 4).

:func:`pool_sample` is a pure function of the **set** of reads, so the order they arrive in
never matters, and recomputing after a delete is just calling it again. Which reads count
(:func:`current_reads`):

1. reads marked ``deleted`` or ``superseded_by`` another run are dropped;
2. of the rest, one read per plate (:attr:`PlateRead.plate_key`, the reading ``device`` and the
   ``plate_id``: a device never replaces another device's plate): the latest ``read_at`` (ties:
   the larger ``run_id``), so a re-read of the same plate replaces the earlier read and never
   adds to it;
3. only then is the sample number matched, so a plate re-read under a corrected sample number
   leaves its old sample;
4. a current read that the caller ``held`` (e.g. ``needs_review``) still hides the plate's older
   reads but its rows do not count; the summary lists it in ``held_run_ids``.

This is the one place that decides; callers load reads (the sample's own and every other read
of the same plates, see :func:`affected_samples`) and store what :func:`pool_sample` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from core.stats import Statistics, add_distributions, compute_statistics, distribution
from core.titre import RowResult

logger = logging.getLogger(__name__)


class PlateRead(BaseModel):
    """One reading of one physical plate (``plate_id``) by one run (``run_id``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: UUID
    sample_number: str = Field(min_length=1, max_length=64)
    plate_id: UUID
    read_at: AwareDatetime
    rows: tuple[RowResult, ...]
    superseded_by: UUID | None = None
    deleted: bool = False
    # Who read it: the appliance on the cloud (its id), "" on the appliance itself.
    device: str = Field(default="", max_length=128)
    # Why the caller does not count this read although it is current (None: it counts).
    held: str | None = Field(default=None, min_length=1, max_length=64)

    @property
    def plate_key(self) -> tuple[str, UUID]:
        """What identifies the physical plate: the reading device and its ``plate_id``."""
        return self.device, self.plate_id


class SampleSummary(BaseModel):
    """A sample over its current reads; ``plates`` is the number of plates that count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_number: str
    run_ids: tuple[UUID, ...]
    plate_ids: tuple[UUID, ...] = ()
    held_run_ids: tuple[UUID, ...] = ()
    plates: int = Field(ge=0)
    distribution: dict[str, int]
    statistics: Statistics
    rows_total: int = Field(ge=0)

    @property
    def n_cols(self) -> int:
        return len(self.distribution) - 1


def _newest_key(read: PlateRead) -> tuple[datetime, str]:
    return read.read_at, str(read.run_id)


def current_reads(reads: Iterable[PlateRead]) -> list[PlateRead]:
    """The reads that count, one per plate, sorted by (read_at, run_id)."""
    latest: dict[tuple[str, UUID], PlateRead] = {}
    for read in reads:
        if read.deleted or read.superseded_by is not None:
            continue
        kept = latest.get(read.plate_key)
        if kept is None or _newest_key(read) > _newest_key(kept):
            latest[read.plate_key] = read
    return sorted(latest.values(), key=_newest_key)


def affected_samples(
    reads: Iterable[PlateRead], plate_keys: Iterable[tuple[str, UUID]]
) -> set[str]:
    """Every sample number holding a read (any state) of one of ``plate_keys``: the samples a
    change to those plates (a new read, a supersede, a delete) must recompute."""
    keys = set(plate_keys)
    return {r.sample_number for r in reads if r.plate_key in keys}


def pool_sample(
    sample_number: str,
    reads: Iterable[PlateRead],
    *,
    n_cols: int,
    protective_titre: float | None = None,
) -> SampleSummary:
    """Distribution and statistics of ``sample_number`` over its current reads."""
    current = [r for r in current_reads(reads) if r.sample_number == sample_number]
    mine = [r for r in current if r.held is None]
    rows: list[RowResult] = [row for read in mine for row in read.rows]
    return SampleSummary(
        sample_number=sample_number,
        run_ids=tuple(r.run_id for r in mine),
        held_run_ids=tuple(r.run_id for r in current if r.held is not None),
        plate_ids=tuple(r.plate_id for r in mine),
        plates=len(mine),
        distribution=add_distributions((distribution(r.rows, n_cols) for r in mine), n_cols),
        statistics=compute_statistics(rows, protective_titre=protective_titre),
        rows_total=len(rows),
    )
