"""Overview, samples (search, detail, charts, CSV), runs (plate map, rows, image)."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Query, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from cloud.crud import field
from cloud.schemas import MAX_IMAGE_BYTES
from cloud.state import AppState
from cloud.web import charts, data
from cloud.web.render import PageRoute, render
from cloud.web.session import Api, ApiProblem
from core.csvsafe import Figure, csv_writer

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)

T = TypeVar("T")
KNOWN_FLAGS = ("skipped", "no_inhibition", "all_inhibited", "unread", "multiple", "low_confidence")
TREND_DAYS = 182


async def signed_in(request: Request) -> tuple[Api, dict[str, Any]]:
    """The request's API client and the user (/auth/me); SignInRequired if there is none."""
    api = Api(request)
    me: dict[str, Any] = await api.call("GET", "/api/v1/auth/me")
    request.state.dash_me = me
    return api, me


async def _query(func: Callable[[], T]) -> T:
    """Run a read in a worker thread; an unavailable database is a 503 page, not a 500."""
    try:
        return await run_in_threadpool(func)
    except (OperationalError, SQLAlchemyTimeout) as exc:
        logger.warning("dashboard query failed: %s", type(exc).__name__)
        raise ApiProblem(503, "The database is busy or unavailable; retry shortly.") from None


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.microplate
    return state


@router.get("/")
async def overview(request: Request) -> Response:
    api, me = await signed_in(request)
    context = await _overview_context(request, api, me)
    return render(request, "overview.html", {"me": me, **context}, api=api)


@router.get("/overview/fragment")
async def overview_fragment(request: Request) -> Response:
    """The overview table alone, for the live update script to swap in."""
    api, me = await signed_in(request)
    context = await _overview_context(request, api, me)
    return render(request, "overview_body.html", {"me": me, **context}, api=api)


async def _overview_context(request: Request, api: Api, me: dict[str, Any]) -> dict[str, Any]:
    sites = await api.call("GET", "/api/v1/sites")
    devices = await api.call("GET", "/api/v1/devices")
    scope = data.scope_from_me(me)

    def last() -> dict[uuid.UUID, data.LastPlate]:
        with _state(request).sessions() as session:
            return data.last_plates(session, scope=scope)

    plates = await _query(last)
    site_names = {s["id"]: s["name"] for s in sites}
    now = datetime.now(timezone.utc)
    rows = []
    for device in devices:
        health = data.device_health(device, now=now)
        status = device.get("last_status") or {}
        disk = status.get("disk_free_bytes")
        rows.append(
            {
                "device": device,
                "site_name": site_names.get(device["site_id"], "?"),
                "health": health,
                "status": status,
                "disk": data.human_bytes(int(disk)) if disk is not None else "–",
                "last": plates.get(uuid.UUID(device["id"])),
            }
        )
    rows.sort(key=lambda r: (-r["health"].severity, r["site_name"], r["device"]["slug"]))
    empty_sites = [s for s in sites if not any(r["device"]["site_id"] == s["id"] for r in rows)]
    counts = {
        state: sum(1 for r in rows if r["health"].state == state)
        for state in ("online", "offline", "stale", "never", "revoked")
    }
    return {"rows": rows, "sites": sites, "empty_sites": empty_sites, "counts": counts}


def _parse_date(text: str | None, label: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{label}: use the form YYYY-MM-DD.")
        return None


def _parse_uuid(text: str | None, label: str, errors: list[str]) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        errors.append(f"{label}: choose one from the list.")
        return None


def _midnight(day: date) -> str:
    return datetime.combine(day, datetime.min.time(), timezone.utc).isoformat()


@router.get("/samples")
async def samples(
    request: Request,
    q: Annotated[str, Query(max_length=64)] = "",
    site_id: Annotated[str, Query(max_length=64)] = "",
    device_id: Annotated[str, Query(max_length=64)] = "",
    read_from: Annotated[str, Query(max_length=32)] = "",
    read_to: Annotated[str, Query(max_length=32)] = "",
    flag: Annotated[list[str] | None, Query(max_length=10)] = None,
    cursor: Annotated[str, Query(max_length=200)] = "",
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    api, me = await signed_in(request)
    errors: list[str] = []
    site = _parse_uuid(site_id, "Site", errors)
    device = _parse_uuid(device_id, "Device", errors)
    start = _parse_date(read_from, "Read from", errors)
    end = _parse_date(read_to, "Read to", errors)
    flags = [f for f in (flag or []) if f in KNOWN_FLAGS]
    if start and end and end < start:
        errors.append("Read to is before Read from.")
    params: list[tuple[str, str]] = [("limit", "50")]
    if q.strip():
        params.append(("q", q.strip()))
    if site:
        params.append(("site_id", str(site)))
    if device:
        params.append(("device_id", str(device)))
    if start:
        params.append(("read_from", _midnight(start)))
    if end:
        params.append(("read_to", _midnight(end + timedelta(days=1))))
    params.extend(("flag", f) for f in flags)
    if cursor:
        params.append(("cursor", cursor))
    sites = await api.call("GET", "/api/v1/sites")
    devices = await api.call("GET", "/api/v1/devices")
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    if not errors:
        try:
            page = await api.call("GET", "/api/v1/samples", params=params)
        except ApiProblem as exc:
            if exc.status not in (400, 422):
                raise
            errors.append(exc.detail)
    if export == "csv" and not errors:
        return api.finish(_list_csv(page["items"], sites))
    trend = await _trends(request, me, site, start, end)
    base = [(k, v) for k, v in params if k not in ("limit", "cursor")]
    filters = {
        "q": q,
        "site_id": site_id,
        "device_id": device_id,
        "read_from": read_from,
        "read_to": read_to,
        "flags": flags,
    }
    context = {
        "me": me,
        "sites": sites,
        "site_names": {s["id"]: s["name"] for s in sites},
        "devices": devices,
        "filters": filters,
        "known_flags": KNOWN_FLAGS,
        "page": page,
        "errors": errors,
        "query": urlencode(_query_pairs(filters)),
        "trend": trend,
        "searched": bool(base),
    }
    return render(request, "samples.html", context, api=api)


async def _trends(
    request: Request,
    me: dict[str, Any],
    site: uuid.UUID | None,
    start: date | None,
    end: date | None,
) -> dict[str, Any]:
    scope = data.scope_from_me(me)
    since = start or (datetime.now(timezone.utc).date() - timedelta(days=TREND_DAYS))

    def load() -> list[tuple[str, datetime, dict[str, Any]]]:
        with _state(request).sessions() as session:
            return data.trend_rows(session, scope=scope, site_id=site, since=since, until=end)

    trends = data.pooled_trends(await _query(load))
    return {
        "since": since,
        "until": end,
        "data": trends,
        "gmt_chart": charts.line_chart(trends.periods, trends.gmt),
        "share_chart": charts.line_chart(trends.periods, trends.share, y_max=1.0),
    }


def _query_pairs(filters: dict[str, Any]) -> list[tuple[str, str]]:
    """The current filters as query pairs, for the next-page and CSV links."""
    pairs: list[tuple[str, str]] = [
        (key, str(filters[key])) for key in ("q", "site_id", "device_id", "read_from", "read_to")
    ]
    pairs.extend(("flag", f) for f in filters["flags"])
    return pairs


def _list_csv(items: list[dict[str, Any]], sites: list[dict[str, Any]]) -> Response:
    """The search result as a table; every text field neutralised against formula injection."""
    names = {s["id"]: s["name"] for s in sites}
    buffer = io.StringIO(newline="")
    writer = csv_writer(buffer)  # neutralises every text cell (flags come from devices)
    writer.writerow(
        [
            *("sample_number", "submission_number", "site", "runs", "plates", "rows"),
            *("gmt", "flags", "first_read_at", "last_read_at"),
        ]
    )
    for item in items:
        writer.writerow(
            [
                item["sample_number"],
                item.get("submission_number") or "",
                names.get(item["site_id"], ""),
                item["n_runs"],
                item["n_plates"],
                item["rows_total"],
                Figure("" if item.get("gmt") is None else f"{item['gmt']:.2f}"),
                " ".join(item.get("flags") or []),
                item.get("first_read_at") or "",
                item.get("last_read_at") or "",
            ]
        )
    return Response(
        buffer.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="samples.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/samples/{sample_id}")
async def sample_detail(request: Request, sample_id: uuid.UUID) -> Response:
    api, me = await signed_in(request)
    sample = await api.call("GET", f"/api/v1/samples/{sample_id}")
    runs = await api.call("GET", f"/api/v1/samples/{sample_id}/runs")
    sites = await api.call("GET", "/api/v1/sites")
    site = next((s for s in sites if s["id"] == sample["site_id"]), None)
    labels = {str(c): f"col {c}" if c else "none" for c in range(sample["n_cols"] + 1)}
    context = {
        "me": me,
        "sample": sample,
        "stats": sample["statistics"],
        "runs": runs,
        "site": site,
        "chart": charts.histogram(sample["distribution"], labels=labels),
    }
    return render(request, "sample.html", context, api=api)


@router.get("/samples/{sample_id}/export.csv")
async def sample_export(request: Request, sample_id: uuid.UUID, template: str = "") -> Response:
    api, _me = await signed_in(request)
    params = {"template": template} if template in ("labware", "labware-legacy") else {}
    resp = await api.raw("GET", f"/api/v1/samples/{sample_id}/export.csv", params=params)
    if resp.status_code != 200:
        raise ApiProblem(resp.status_code, "The CSV could not be made for this sample.")
    headers = {
        "Content-Disposition": resp.headers.get("content-disposition", "attachment"),
        "Cache-Control": "no-store",
    }
    return api.finish(Response(resp.content, media_type="text/csv; charset=utf-8", headers=headers))


@router.get("/review")
async def review(request: Request) -> Response:
    """Reads the appliances' plate-quality gate held for review (they count in no sample)."""
    api, me = await signed_in(request)
    runs = await api.call("GET", "/api/v1/runs", params={"status": "needs_review", "limit": 200})
    devices = await api.call("GET", "/api/v1/devices")
    names = {d["id"]: d.get("name") or d.get("slug") or d["id"] for d in devices}
    scope = data.scope_from_me(me)

    def corrected() -> list[field.CorrectedRun]:
        with _state(request).sessions() as session:
            return field.corrected_runs(session, scope=scope)

    context = {
        "me": me,
        "runs": runs,
        "device_names": names,
        "chart_days": TREND_DAYS,
        "corrected": await _query(corrected),
    }
    return render(request, "review.html", context, api=api)


@router.get("/runs/{run_id}")
async def run_detail(request: Request, run_id: uuid.UUID) -> Response:
    api, me = await signed_in(request)
    run = await api.call("GET", f"/api/v1/runs/{run_id}")
    wells = {(w["row"], w["col"]): w for w in run["wells"]}
    n_rows, n_cols = run["n_rows"], run["n_cols"]
    row_labels = [r["label"] for r in run["rows"]] or [chr(65 + i) for i in range(n_rows)]
    grid = [[wells.get((r, c)) for c in range(n_cols)] for r in range(n_rows)]
    context = {
        "me": me,
        "run": run,
        "grid": grid,
        "row_labels": row_labels,
        "cols": list(range(1, n_cols + 1)),
        "has_image": "annotated" in run["images"],
    }
    return render(request, "run.html", context, api=api)


JPEG_MAGIC = b"\xff\xd8"


@router.get("/runs/{run_id}/image.jpg")
async def run_image(request: Request, run_id: uuid.UUID) -> Response:
    """The annotated image, fetched from object storage through the API's presigned URL.

    Served from this origin so the page's CSP can stay `img-src 'self'`. Streamed, never held
    whole; only a JPEG (by its first bytes) of at most `MAX_IMAGE_BYTES` is passed on, with a
    CSP that lets nothing in it run even if a browser were to render it as a page.
    """
    api, _me = await signed_in(request)
    presigned = await api.call("GET", f"/api/v1/runs/{run_id}/image", params={"kind": "annotated"})
    client = httpx.AsyncClient(timeout=20.0)
    try:
        resp = await client.send(client.build_request("GET", presigned["url"]), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        logger.warning("image fetch failed for run %s: %s", run_id, type(exc).__name__)
        raise ApiProblem(503, "The image store did not answer; try again shortly.") from None
    chunks = resp.aiter_bytes(64 * 1024)
    first = b""
    try:
        if resp.status_code == 200:
            first = await anext(chunks, b"")
    except httpx.HTTPError:
        first = b""
    declared = int(resp.headers.get("content-length") or 0)
    if resp.status_code != 200 or not first.startswith(JPEG_MAGIC) or declared > MAX_IMAGE_BYTES:
        await resp.aclose()
        await client.aclose()
        raise ApiProblem(404, "This run has no annotated image (yet).")

    async def body() -> AsyncIterator[bytes]:
        sent = len(first)
        try:
            yield first
            async for chunk in chunks:
                sent += len(chunk)
                if sent > MAX_IMAGE_BYTES:
                    logger.warning("image of run %s is over the size limit; cut", run_id)
                    return
                yield chunk
        finally:
            await resp.aclose()
            await client.aclose()

    headers = {
        "Cache-Control": "private, max-age=300",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    return api.finish(StreamingResponse(body(), media_type="image/jpeg", headers=headers))
