"""Samples and runs across the sites a user may see; CSV export; annotated images."""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy import Connection

from cloud.api.deps import (
    AccessClaims,
    ManagerUser,
    ReleasingRoute,
    ScopeDep,
    SessionDep,
    StateDep,
    client_ip,
    not_found,
    reader_scope,
)
from cloud.crud import audit, fastread, queries, results
from cloud.models import Device, Run, Sample, Site
from cloud.schemas import PresignedUrl
from cloud.schemas_results import RunDetail, RunSummary, SampleDetail, SamplePage
from cloud.storage import image_key
from core.labware import csv_filename, render_csv
from core.pooling import SampleSummary
from core.sanitize import SampleNumberError

router = APIRouter(prefix="/api/v1", tags=["results"], route_class=ReleasingRoute)
Template = Literal["labware", "labware-legacy"]
FLAG = r"^[a-z_]{1,32}$"


class JSONBytes(Response):
    """A body already serialised by `cloud.crud.fastread` (FastAPI skips response checks)."""

    media_type = "application/json"


# The three polled read routes below do everything in one worker thread on one pooled
# connection: the user's scope, then one statement for the body, serialised without pydantic.
# `response_model` keeps the documented schema; tests validate the bytes against it.
@router.get("/samples", response_model=SamplePage, responses={400: {}})
def list_samples(
    claims: AccessClaims,
    state: StateDep,
    q: Annotated[
        str | None,
        Query(
            max_length=64,
            description="start of a sample number, submission number or run description "
            "(any letter case)",
        ),
    ] = None,
    site_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
    read_from: datetime | None = None,
    read_to: datetime | None = None,
    flag: Annotated[list[str] | None, Query(max_length=10)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    flt = queries.SampleFilter(
        q=q,
        site_id=site_id,
        device_id=device_id,
        read_from=read_from,
        read_to=read_to,
        flags=tuple(flag or ()),
    )

    def work(conn: Connection) -> bytes:
        scope = reader_scope(conn, claims)
        return fastread.sample_page(conn, scope=scope, flt=flt, limit=limit, cursor=cursor)

    try:
        body = fastread.read(state.read_engine, work)
    except queries.CursorError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return JSONBytes(body)


def _sample_or_404(session: SessionDep, scope: ScopeDep, sample_id: uuid.UUID) -> Sample:
    sample = queries.get_sample(session, sample_id=sample_id, scope=scope)
    if sample is None:
        raise not_found("Sample")
    return sample


@router.get("/samples/{sample_id}", response_model=SampleDetail, responses={404: {}})
def get_sample(sample_id: uuid.UUID, claims: AccessClaims, state: StateDep) -> Response:
    body = fastread.read(
        state.read_engine,
        lambda conn: fastread.sample_detail(
            conn, sample_id=sample_id, scope=reader_scope(conn, claims)
        ),
    )
    if body is None:
        raise not_found("Sample")
    return JSONBytes(body)


@router.get("/samples/{sample_id}/runs", responses={404: {}})
def get_sample_runs(sample_id: uuid.UUID, scope: ScopeDep, session: SessionDep) -> list[RunSummary]:
    sample = _sample_or_404(session, scope, sample_id)
    return [
        RunSummary.model_validate(r)
        for r in queries.sample_runs(session, sample=sample, scope=scope)
    ]


@router.get(
    "/samples/{sample_id}/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, 404: {}},
)
def export_sample(
    sample_id: uuid.UUID,
    scope: ScopeDep,
    session: SessionDep,
    template: Template | None = None,
) -> Response:
    """The LabWare CSV of the pooled sample; the site's template unless one is named."""
    sample = _sample_or_404(session, scope, sample_id)
    site = session.get(Site, sample.site_id)
    chosen = template or (site.csv_template if site else "labware")
    summary = SampleSummary.model_validate(sample.summary)
    buffer = io.StringIO(newline="")
    render_csv(summary, buffer, template=chosen)
    when = sample.last_read_at or sample.updated_at
    try:
        filename = csv_filename(sample.sample_number, when)
    except SampleNumberError:
        # A number with no ASCII letter or digit (e.g. only CJK): still a valid sample.
        filename = csv_filename(f"sample-{sample.id.hex[:12]}", when)
    return Response(
        buffer.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _run_or_404(session: SessionDep, scope: ScopeDep, run_id: uuid.UUID) -> Run:
    run = queries.get_run(session, run_id=run_id, scope=scope)
    if run is None:
        raise not_found("Run")
    return run


RunStatus = Literal["current", "superseded", "deleted", "needs_review"]


@router.get("/runs", responses={422: {}})
def list_runs(
    scope: ScopeDep,
    session: SessionDep,
    run_status: Annotated[RunStatus | None, Query(alias="status")] = None,
    site_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[RunSummary]:
    """Runs in the caller's sites, newest first; `status=needs_review` lists the reads the
    appliances' plate-quality gate held for review (they count in no sample)."""
    runs = queries.list_runs(
        session, scope=scope, status=run_status, site_id=site_id, device_id=device_id, limit=limit
    )
    return [RunSummary.model_validate(r) for r in runs]


@router.get("/runs/{run_id}", response_model=RunDetail, responses={404: {}})
def get_run(run_id: uuid.UUID, claims: AccessClaims, state: StateDep) -> Response:
    body = fastread.read(
        state.read_engine,
        lambda conn: fastread.run_detail(conn, run_id=run_id, scope=reader_scope(conn, claims)),
    )
    if body is None:
        raise not_found("Run")
    return JSONBytes(body)


@router.get("/runs/{run_id}/image", responses={404: {}, 503: {}})
def get_run_image(
    run_id: uuid.UUID,
    scope: ScopeDep,
    session: SessionDep,
    state: StateDep,
    kind: Literal["annotated", "raw", "thumbnail"] = "annotated",
) -> PresignedUrl:
    """A short-lived presigned GET for the run's image."""
    run = _run_or_404(session, scope, run_id)
    if state.store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Object storage not configured")
    device = session.get(Device, run.device_id)
    if device is None:
        raise not_found("Image")
    key = image_key(site=device.site.slug, device=device.slug, run_id=str(run.run_id), kind=kind)
    return PresignedUrl(
        url=state.store.presign_get(key), method="GET", key=key, expires_in=state.store.expires
    )


@router.delete("/runs/{run_id}", status_code=204, responses={404: {}})
def delete_run(
    run_id: uuid.UUID, request: Request, user: ManagerUser, scope: ScopeDep, session: SessionDep
) -> None:
    """Stop counting a run (kept for the record); its sample is recomputed in the same step."""
    run = _run_or_404(session, scope, run_id)
    if run.status != "deleted":
        results.delete_run(session, run=run)
        audit.record(
            session,
            action="run.deleted",
            actor_user_id=user.id,
            target_type="run",
            target_id=run.run_id,
            site_id=run.site_id,
            ip=client_ip(request),
            detail={"sample_number": run.sample_number},
        )
        session.commit()
