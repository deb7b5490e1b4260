"""JSON series for the dashboard's charts (drawn in the browser by the vendored uPlot).

Behind the same sign-in as the pages (`signed_in`: the session cookie, the user's sites), and
computed by the same functions as the server-rendered SVG the pages still carry as their
fallback, so the two can never disagree. x values are Unix seconds (UTC): the start of the ISO
week for the weekly trends, the start of the day for plates per day.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Date, case, cast, func, or_, select
from sqlalchemy.orm import Session

from cloud.crud.field import FIELD_BY, field_accuracy
from cloud.crud.scope import Scope
from cloud.models import Device, Run, Site
from cloud.web import data
from cloud.web.pages import TREND_DAYS, _query, _state, signed_in
from cloud.web.render import PageRoute, secure_headers

router = APIRouter(prefix="/ui/charts", include_in_schema=False, route_class=PageRoute)
PLATES_DAYS = 92


def week_start(label: str) -> int:
    """Unix seconds of the Monday 00:00 UTC that starts ISO week `label` ("2026-W05")."""
    year, week = label.split("-W")
    monday = date.fromisocalendar(int(year), int(week), 1)
    return int(datetime.combine(monday, datetime.min.time(), timezone.utc).timestamp())


def _series(by_site: dict[str, dict[str, float]], keys: list[str]) -> list[dict[str, Any]]:
    return [
        {"name": site, "values": [values.get(k) for k in keys]}
        for site, values in sorted(by_site.items())
    ]


def trends_json(trends: data.Trends) -> dict[str, Any]:
    return {
        "x": [week_start(p) for p in trends.periods],
        "labels": trends.periods,
        "gmt": _series(trends.gmt, trends.periods),
        "share": _series(trends.share, trends.periods),
        "protective": trends.protective,
    }


def plates_per_day(
    session: Session, *, scope: Scope, site_id: uuid.UUID | None, since: date, until: date | None
) -> dict[str, Any]:
    """Current plates read per site and UTC day (a re-read replaces its plate: not counted)."""
    day = cast(func.timezone("UTC", Run.read_at), Date)
    query = (
        select(Site.name, day, func.count())
        .join(Site, Site.id == Run.site_id)
        .where(
            scope.clause(Run.site_id),
            Run.status == "current",
            Run.read_at >= datetime.combine(since, datetime.min.time(), timezone.utc),
        )
        .group_by(Site.name, day)
    )
    if until is not None:
        end = datetime.combine(until + timedelta(days=1), datetime.min.time(), timezone.utc)
        query = query.where(Run.read_at < end)
    if site_id is not None:
        query = query.where(Run.site_id == site_id)
    counts: dict[str, dict[str, float]] = {}
    days: set[date] = set()
    for site, when, n in session.execute(query):
        counts.setdefault(str(site), {})[when.isoformat()] = int(n)
        days.add(when)
    if days:  # every day in the range, so a day without plates reads 0, not a gap
        first, last = min(days), max(days)
        days = {first + timedelta(days=i) for i in range((last - first).days + 1)}
    keys = sorted(d.isoformat() for d in days)
    series = [
        {"name": site, "values": [by_day.get(k, 0) for k in keys]}
        for site, by_day in sorted(counts.items())
    ]
    x = [int(datetime.fromisoformat(k).replace(tzinfo=timezone.utc).timestamp()) for k in keys]
    return {"x": x, "labels": keys, "series": series}


REVIEW_BY = ("device", "model")


def review_share(
    session: Session,
    *,
    scope: Scope,
    by: str,
    site_id: uuid.UUID | None,
    since: date,
    until: date | None,
) -> dict[str, Any]:
    """Share of plate reads the appliance's plate-quality gate held, per ISO week and per device
    (`by="device"`) or per model name and version (`by="model"`).

    A read counts as held when it is `needs_review` or carries review reasons (a held read a
    later good read superseded was still held); reads deleted by the edge or a manager count
    nowhere. Series carry their `held` and `reads` per week so the share can be checked.
    """
    model = Run.extra["model"]
    # Device slugs repeat across sites (each site may have a reader-1): name them with the site.
    key: Any = (
        func.concat_ws(" · ", Site.name, Device.slug)
        if by == "device"
        else func.concat_ws(" ", model["name"].astext, model["version"].astext)
    )
    day = cast(func.timezone("UTC", Run.read_at), Date)
    held = or_(Run.status == "needs_review", func.cardinality(Run.review_reasons) > 0)
    reads_in = (
        select(key.label("key"), day.label("day"), held.label("held"))
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
        reads_in = reads_in.where(Run.read_at < end)
    if site_id is not None:
        reads_in = reads_in.where(Run.site_id == site_id)
    # Grouped outside: the key expressions carry bound parameters, which Postgres would not
    # match between SELECT and GROUP BY.
    sub = reads_in.subquery()
    query = select(sub.c.key, sub.c.day, func.count(), func.count(case((sub.c.held, 1)))).group_by(
        sub.c.key, sub.c.day
    )
    reads: dict[str, dict[str, list[int]]] = {}
    for name, when, n, n_held in session.execute(query):
        label = str(name or "") or "unknown model"
        week = data.week_label(datetime.combine(when, datetime.min.time(), timezone.utc))
        counts = reads.setdefault(label, {}).setdefault(week, [0, 0])
        counts[0] += int(n_held)
        counts[1] += int(n)
    weeks = sorted({w for by_week in reads.values() for w in by_week})
    series = []
    for label, by_week in sorted(reads.items()):
        pairs = [by_week.get(w) for w in weeks]
        series.append(
            {
                "name": label,
                "values": [None if p is None else round(p[0] / p[1], 4) for p in pairs],
                "held": [None if p is None else p[0] for p in pairs],
                "reads": [None if p is None else p[1] for p in pairs],
            }
        )
    return {"x": [week_start(w) for w in weeks], "labels": weeks, "by": by, "series": series}


def _json(body: dict[str, Any]) -> JSONResponse:
    response = JSONResponse(body)
    secure_headers(response, no_store=True)
    return response


class BadFilter(ValueError):
    """A filter value in the chart's address is not valid (answered as JSON 400)."""


def _filters(
    site_id: str, read_from: str, read_to: str, *, days: int
) -> tuple[uuid.UUID | None, date, date | None]:
    """The page's own filter values (empty = not set), as the samples page sends them; with no
    `read_from` the window starts `days` ago."""
    try:
        site = uuid.UUID(site_id) if site_id.strip() else None
    except ValueError:
        raise BadFilter("site_id is not a site id") from None
    dates: list[date | None] = []
    for name, value in (("read_from", read_from), ("read_to", read_to)):
        try:
            dates.append(date.fromisoformat(value.strip()) if value.strip() else None)
        except ValueError:
            raise BadFilter(f"{name} is not a date (YYYY-MM-DD)") from None
    since = dates[0] or (datetime.now(timezone.utc).date() - timedelta(days=days))
    return site, since, dates[1]


Filter = Annotated[str, Query(max_length=64)]


def _bad(exc: BadFilter) -> JSONResponse:
    response = JSONResponse({"detail": str(exc)}, status_code=400)
    secure_headers(response, no_store=True)
    return response


@router.get("/trends.json")
async def trends(
    request: Request, site_id: Filter = "", read_from: Filter = "", read_to: Filter = ""
) -> JSONResponse:
    """GMT and protective share per site and ISO week (the samples page's trend charts)."""
    _, me = await signed_in(request)
    try:
        site, since, end = _filters(site_id, read_from, read_to, days=TREND_DAYS)
    except BadFilter as exc:
        return _bad(exc)
    scope = data.scope_from_me(me)

    def load() -> list[tuple[str, datetime, dict[str, Any]]]:
        with _state(request).sessions() as session:
            return data.trend_rows(session, scope=scope, site_id=site, since=since, until=end)

    return _json(trends_json(data.pooled_trends(await _query(load))))


@router.get("/plates-per-day.json")
async def plates(
    request: Request, site_id: Filter = "", read_from: Filter = "", read_to: Filter = ""
) -> JSONResponse:
    """Current plates per site and UTC day (default: the last PLATES_DAYS days)."""
    _, me = await signed_in(request)
    try:
        site, since, end = _filters(site_id, read_from, read_to, days=PLATES_DAYS)
    except BadFilter as exc:
        return _bad(exc)
    scope = data.scope_from_me(me)

    def load() -> dict[str, Any]:
        with _state(request).sessions() as session:
            return plates_per_day(session, scope=scope, site_id=site, since=since, until=end)

    return _json(await _query(load))


async def _by_group(
    request: Request,
    by: str,
    allowed: Sequence[str],
    site_id: str,
    read_from: str,
    read_to: str,
    compute: Callable[..., dict[str, Any]],
) -> dict[str, Any] | JSONResponse:
    """A weekly series grouped `by` one of `allowed` (the signed-in user's scope, the filters),
    or the 400 a bad filter gets."""
    _, me = await signed_in(request)
    try:
        if by not in allowed:
            *rest, last = allowed
            raise BadFilter(f"by is {', '.join(rest)} or {last}")
        site, since, end = _filters(site_id, read_from, read_to, days=TREND_DAYS)
    except BadFilter as exc:
        return _bad(exc)
    scope = data.scope_from_me(me)

    def load() -> dict[str, Any]:
        with _state(request).sessions() as session:
            return compute(session, scope=scope, by=by, site_id=site, since=since, until=end)

    return await _query(load)


@router.get("/review-share.json")
async def review(
    request: Request,
    by: Filter = "device",
    site_id: Filter = "",
    read_from: Filter = "",
    read_to: Filter = "",
) -> JSONResponse:
    """Weekly share of reads held for review, per device or per model version."""
    body = await _by_group(request, by, REVIEW_BY, site_id, read_from, read_to, review_share)
    return body if isinstance(body, JSONResponse) else _json(body)


@router.get("/field-accuracy.json")
async def field(
    request: Request,
    by: Filter = "device",
    site_id: Filter = "",
    read_from: Filter = "",
    read_to: Filter = "",
) -> JSONResponse:
    """Weekly share of wells operators corrected, per device, site or model version."""
    body = await _by_group(request, by, FIELD_BY, site_id, read_from, read_to, field_accuracy)
    if isinstance(body, JSONResponse):
        return body
    return _json({"x": [week_start(w) for w in body["labels"]], **body})
