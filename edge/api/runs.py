"""Runs: upload a plate image, list, get, re-read, delete, images, and ticket progress."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from edge.api.deps import (
    ApplianceDep,
    LimitsDep,
    OperatorUser,
    SupervisorUser,
    require_operator,
)
from edge.api.errors import ApiError
from edge.schemas import (
    Page,
    ReviewQueueItem,
    ReviewRequest,
    RunDetail,
    RunRequest,
    RunSummary,
    Ticket,
    TicketState,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["runs"], dependencies=[Depends(require_operator)])

RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]

# Magic numbers of the image formats the decoder accepts; the declared type is not trusted.
IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/bmp": (b"BM",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
}
# Non-standard names some clients send for the same formats.
TYPE_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
}
RUN_REQUEST_FIELDS = ("sample_number", "submission_number", "description", "operator")

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "sample_number"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{name: {"type": "string"} for name in RUN_REQUEST_FIELDS},
                    },
                }
            }
        },
    }
}


def _sniff(data: bytes) -> str | None:
    for media_type, signatures in IMAGE_SIGNATURES.items():
        if any(data.startswith(sig) for sig in signatures):
            return media_type
    return None


@router.get("/runs", summary="List runs, newest first")
def list_runs(
    appliance: ApplianceDep,
    sample_number: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[RunSummary]:
    return appliance.runs.list_runs(sample_number=sample_number, limit=limit, offset=offset)


@router.post(
    "/runs",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a plate image; it is queued for reading",
    openapi_extra=UPLOAD_BODY,
)
async def upload_run(
    request: Request, appliance: ApplianceDep, limits: LimitsDep, _: OperatorUser
) -> Ticket:
    # The form is parsed here, after authentication, rather than by a Form() parameter (which
    # FastAPI would parse before any dependency runs, i.e. for anonymous callers too).
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the plate image as multipart/form-data with a 'file' field.",
        )
    async with request.form(max_files=1, max_fields=len(RUN_REQUEST_FIELDS)) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_input", "Attach the plate image as the 'file' field.")
        fields = {k: v for k, v in form.items() if k in RUN_REQUEST_FIELDS and isinstance(v, str)}
        data = await upload.read(limits.max_upload_bytes + 1)
        filename = (upload.filename or "upload")[:200]
        declared = (upload.content_type or "").split(";")[0].strip().lower()
        declared = TYPE_ALIASES.get(declared, declared)
    if len(data) > limits.max_upload_bytes:
        raise ApiError(
            413,
            "too_large",
            f"The image is larger than {limits.max_upload_bytes // (1024 * 1024)} MB.",
        )
    if not data:
        raise ApiError(422, "invalid_input", "The uploaded file is empty.")
    sniffed = _sniff(data)
    if sniffed is None or (declared not in ("", "application/octet-stream", sniffed)):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Only JPEG, PNG, BMP or TIFF plate images are accepted "
            f"(got {declared or 'an unknown type'}).",
        )
    try:
        req = RunRequest(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(
            422, "invalid_input", f"The run details are not valid ({problems})."
        ) from exc
    return await run_in_threadpool(appliance.intake.submit_image, data, filename, req)


@router.get("/runs/{run_id}", summary="One run with wells, rows, flags, images and CSV state")
def get_run(run_id: RunId, appliance: ApplianceDep) -> RunDetail:
    return appliance.runs.get_run(run_id)


@router.post(
    "/runs/{run_id}/reread",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Read the same plate again; the new run supersedes this one",
)
def reread_run(run_id: RunId, appliance: ApplianceDep, user: OperatorUser) -> Ticket:
    return appliance.runs.reread(run_id, actor=user.actor)


@router.post(
    "/runs/{run_id}/review",
    summary="Correct wells and/or accept a held run as read; answers with the updated run",
)
def review_run(
    run_id: RunId, body: ReviewRequest, appliance: ApplianceDep, user: OperatorUser
) -> RunDetail:
    return appliance.review.review(
        run_id,
        body.wells,
        accept=body.accept,
        actor=user.actor,
        supervisor=user.role == "supervisor",
        reviewer=body.reviewer,
    )


@router.get("/review-queue", summary="Runs to review: held by the plate gate, then unread rows")
def review_queue(appliance: ApplianceDep, limit: Limit = 50) -> list[ReviewQueueItem]:
    return appliance.review.queue(limit)


@router.delete(
    "/runs/{run_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a run (supervisor); its sample is recomputed",
)
def delete_run(
    run_id: RunId,
    appliance: ApplianceDep,
    user: SupervisorUser,
    reason: Annotated[str, Query(min_length=3, max_length=500)],
) -> None:
    appliance.runs.delete_run(run_id, actor=user.actor, reason=reason)


@router.get("/runs/{run_id}/images/{kind}", summary="A run's raw, annotated or thumbnail image")
def run_image(
    run_id: RunId,
    kind: Literal["raw", "annotated", "thumbnail"],
    appliance: ApplianceDep,
) -> FileResponse:
    path = appliance.runs.run_image(run_id, kind)
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


@router.get("/tickets/{ticket_id}", summary="Progress of a queued plate; waits up to `wait` s")
def ticket_state(
    ticket_id: RunId,
    appliance: ApplianceDep,
    limits: LimitsDep,
    wait: Annotated[float, Query(ge=0, le=120)] = 0.0,
) -> TicketState:
    return appliance.intake.wait(ticket_id, timeout=min(wait, limits.ticket_wait_max_s))
