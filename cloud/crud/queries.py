"""Read side of results: sample search (paged by sample), sample detail, runs, wells, rows.

Every function takes a `Scope`; rows of sites outside it are invisible (not "forbidden"),
so the API answers 404 for them and ids of other sites leak nothing.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, Select, and_, exists, or_, select
from sqlalchemy.orm import Session, defer

from cloud.crud.scope import Scope
from cloud.crud.search import matching_samples
from cloud.models import Run, RunRow, RunWell, Sample


class CursorError(ValueError):
    """The paging cursor is not one this API handed out."""


@dataclass(frozen=True)
class SampleFilter:
    q: str | None = None
    site_id: uuid.UUID | None = None
    device_id: uuid.UUID | None = None
    read_from: datetime | None = None
    read_to: datetime | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class SamplePage:
    items: list[Sample]
    next_cursor: str | None


def cursor_for(last_read_at: datetime | None, sample_id: uuid.UUID) -> str:
    """The cursor that continues after the sample with this sort key."""
    assert last_read_at is not None
    raw = f"{last_read_at.isoformat()}|{sample_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def encode_cursor(sample: Sample) -> str:
    return cursor_for(sample.last_read_at, sample.id)


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        return datetime.fromisoformat(when), uuid.UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorError("invalid cursor; start again without one") from exc


def filtered(query: Select[Any], *, scope: Scope, flt: SampleFilter) -> Select[Any]:
    query = query.where(scope.clause(Sample.site_id), Sample.n_plates > 0)
    if flt.q:
        query = query.where(matching_samples(flt.q))
    if flt.site_id is not None:
        query = query.where(Sample.site_id == flt.site_id)
    if flt.read_from is not None:
        query = query.where(Sample.last_read_at >= flt.read_from)
    if flt.read_to is not None:
        query = query.where(Sample.last_read_at < flt.read_to)
    if flt.flags:
        query = query.where(Sample.flags.overlap(list(flt.flags)))
    if flt.device_id is not None:
        query = query.where(
            exists().where(
                Run.sample_id == Sample.id,
                Run.device_id == flt.device_id,
                Run.status == "current",
            )
        )
    return query


def after_cursor(query: Select[Any], cursor: str | None) -> Select[Any]:
    """Restrict a newest-first sample query to the rows after `cursor` (CursorError if bad)."""
    if cursor is None:
        return query
    when, ident = decode_cursor(cursor)
    return query.where(
        or_(Sample.last_read_at < when, and_(Sample.last_read_at == when, Sample.id < ident))
    )


def list_samples(
    session: Session, *, scope: Scope, flt: SampleFilter, limit: int, cursor: str | None = None
) -> SamplePage:
    """Samples newest first, keyset-paged on (last_read_at, id): deep pages stay fast."""
    # The list never shows the stored summary (the big JSON column): do not fetch it.
    query = filtered(
        select(Sample).options(defer(Sample.summary), defer(Sample.distribution)),
        scope=scope,
        flt=flt,
    )
    query = after_cursor(query, cursor)
    query = query.order_by(Sample.last_read_at.desc(), Sample.id.desc()).limit(limit + 1)
    items: list[Sample] = list(session.scalars(query))
    more = len(items) > limit
    items = items[:limit]
    return SamplePage(items=items, next_cursor=encode_cursor(items[-1]) if more and items else None)


def get_sample(session: Session, *, sample_id: uuid.UUID, scope: Scope) -> Sample | None:
    sample = session.get(Sample, sample_id)
    if sample is None or not scope.allows(sample.site_id):
        return None
    return sample


def sample_runs(session: Session, *, sample: Sample, scope: Scope) -> list[Run]:
    query = (
        select(Run)
        .where(Run.sample_id == sample.id, scope.clause(Run.site_id))
        .order_by(Run.read_at.desc(), Run.run_id)
    )
    return list(session.scalars(query))


def list_runs(
    session: Session,
    *,
    scope: Scope,
    status: str | None = None,
    site_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
    limit: int = 50,
) -> list[Run]:
    """Runs across the scope's sites, newest first (e.g. status needs_review: runs to review)."""
    query = select(Run).where(scope.clause(Run.site_id))
    if status is not None:
        query = query.where(Run.status == status)
    if site_id is not None:
        query = query.where(Run.site_id == site_id)
    if device_id is not None:
        query = query.where(Run.device_id == device_id)
    query = query.order_by(Run.read_at.desc(), Run.run_id).limit(limit)
    return list(session.scalars(query))


def get_run(session: Session, *, run_id: uuid.UUID, scope: Scope) -> Run | None:
    run = session.get(Run, run_id)
    if run is None or not scope.allows(run.site_id):
        return None
    return run


def run_details(session: Session, *, run: Run) -> tuple[list[dict[str, Any]], list[RowMapping]]:
    """A run's 96 (or 384) wells (plate order, from its wells document) and its rows.

    Plain rows, not ORM objects: a run detail reads ~100 values and the API only serialises
    them, so identity-map bookkeeping would be most of the request's CPU time.
    """
    rows_t = RunRow.__table__
    wells = session.scalar(select(RunWell.wells).where(RunWell.run_id == run.run_id)) or []
    rows = list(
        session.execute(
            select(rows_t).where(rows_t.c.run_id == run.run_id).order_by(rows_t.c.row)
        ).mappings()
    )
    return list(wells), rows
