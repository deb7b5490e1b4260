"""Field accuracy: the share of wells operators corrected, per device, site or model version.

Every read that was not deleted counts its wells (a read nobody reviewed corrected none of
them); `runs.n_corrected` is the number of wells an operator changed from the model's call
(set by `cloud.crud.results.upsert_run` from the review edit). This is the figure of how the
model does on the plates the labs really read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Date, cast, func, select
from sqlalchemy.orm import Session

from cloud.crud.scope import Scope
from cloud.models import Device, Run, Site

FIELD_BY = ("device", "site", "model")


def _key(by: str) -> Any:
    model = Run.extra["model"]
    if by == "device":  # device slugs repeat across sites: name them with the site
        return func.concat_ws(" · ", Site.name, Device.slug)
    if by == "site":
        return Site.name
    return func.concat_ws(" ", model["name"].astext, model["version"].astext)


def _week_label(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def field_accuracy(
    session: Session,
    *,
    scope: Scope,
    by: str,
    site_id: uuid.UUID | None,
    since: date,
    until: date | None,
) -> dict[str, Any]:
    """Weekly share of wells corrected, one series per device, site or model version; each
    series carries its `corrected` and `wells` per week so the share can be checked."""
    if by not in FIELD_BY:
        raise ValueError("by is device, site or model")
    day = cast(func.timezone("UTC", Run.read_at), Date)
    inner = (
        select(
            _key(by).label("key"),
            day.label("day"),
            (Run.n_rows * Run.n_cols).label("wells"),
            Run.n_corrected.label("corrected"),
        )
        .join(Site, Site.id == Run.site_id)
        .join(Device, Device.id == Run.device_id)
        .where(
            scope.clause(Run.site_id),
            Run.status != "deleted",
            Run.read_at >= datetime.combine(since, datetime.min.time(), timezone.utc),
        )
    )
    if until is not None:
        end = datetime.combine(until + timedelta(days=1), datetime.min.time(), timezone.utc)
        inner = inner.where(Run.read_at < end)
    if site_id is not None:
        inner = inner.where(Run.site_id == site_id)
    sub = inner.subquery()
    query = select(sub.c.key, sub.c.day, func.sum(sub.c.wells), func.sum(sub.c.corrected)).group_by(
        sub.c.key, sub.c.day
    )
    counts: dict[str, dict[str, list[int]]] = {}
    for name, when, wells, corrected in session.execute(query):
        label = str(name or "") or "unknown"
        pair = counts.setdefault(label, {}).setdefault(_week_label(when), [0, 0])
        pair[0] += int(corrected or 0)
        pair[1] += int(wells or 0)
    weeks = sorted({w for by_week in counts.values() for w in by_week})
    series = []
    for label, by_week in sorted(counts.items()):
        pairs = [by_week.get(w) for w in weeks]
        series.append(
            {
                "name": label,
                "values": [None if not p or not p[1] else round(p[0] / p[1], 5) for p in pairs],
                "corrected": [None if p is None else p[0] for p in pairs],
                "wells": [None if p is None else p[1] for p in pairs],
            }
        )
    return {"labels": weeks, "by": by, "series": series}


@dataclass(frozen=True)
class CorrectedRun:
    run_id: uuid.UUID
    read_at: datetime
    reviewed_at: datetime
    site: str
    device: str
    sample_number: str
    n_corrected: int
    wells: int
    model: str
    reviewer: str
    status: str


def corrected_runs(session: Session, *, scope: Scope, limit: int = 200) -> list[CorrectedRun]:
    """Runs an operator reviewed, newest review first, across the caller's sites."""
    model = Run.extra["model"]
    query = (
        select(
            Run.run_id,
            Run.read_at,
            Run.reviewed_at,
            Site.name,
            Device.slug,
            Run.sample_number,
            Run.n_corrected,
            Run.n_rows * Run.n_cols,
            func.concat_ws(" ", model["name"].astext, model["version"].astext),
            Run.extra["review"]["by"].astext,
            Run.status,
        )
        .join(Site, Site.id == Run.site_id)
        .join(Device, Device.id == Run.device_id)
        .where(scope.clause(Run.site_id), Run.reviewed_at.is_not(None), Run.status != "deleted")
        .order_by(Run.reviewed_at.desc())
        .limit(limit)
    )
    return [CorrectedRun(*row) for row in session.execute(query)]


def field_totals(conn: Connection, *, days: int = 30) -> list[tuple[str, str, str, int, int]]:
    """(site, device, model, wells, corrected) over the last `days` days, for /metrics."""
    model = Run.extra["model"]
    key = func.concat_ws(" ", model["name"].astext, model["version"].astext)
    since = datetime.now(timezone.utc) - timedelta(days=days)
    inner = (
        select(
            Site.slug.label("site"),
            Device.slug.label("device"),
            key.label("model"),
            (Run.n_rows * Run.n_cols).label("wells"),
            Run.n_corrected.label("corrected"),
        )
        .join(Site, Site.id == Run.site_id)
        .join(Device, Device.id == Run.device_id)
        .where(Run.status != "deleted", Run.read_at >= since)
        .subquery()
    )
    query = select(
        inner.c.site,
        inner.c.device,
        inner.c.model,
        func.sum(inner.c.wells),
        func.sum(inner.c.corrected),
    ).group_by(inner.c.site, inner.c.device, inner.c.model)
    return [
        (s, d, m or "unknown", int(w or 0), int(c or 0)) for s, d, m, w, c in conn.execute(query)
    ]
