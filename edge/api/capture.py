"""Capture trigger and the live preview (MJPEG), throttled so it never starves inference."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edge.api.deps import (
    ApplianceDep,
    AuthDep,
    LimitsDep,
    OperatorUser,
    bearer_token,
    require_operator,
)
from edge.api.errors import ApiError
from edge.schemas import RunRequest, Ticket

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/capture", tags=["capture"], dependencies=[Depends(require_operator)]
)

BOUNDARY = "frame"


class PreviewSlots:
    """Leases for concurrent preview streams.

    A lease not renewed for ``stale_s`` is reclaimed, so a stream whose generator never ran
    its cleanup (client gone before the first frame) cannot hold a slot forever.
    """

    def __init__(self, capacity: int, stale_s: float) -> None:
        self._capacity = capacity
        self._stale_s = stale_s
        self._lock = threading.Lock()
        self._leases: dict[int, float] = {}
        self._next = 0

    def acquire(self) -> int | None:
        with self._lock:
            now = time.monotonic()
            for lease, seen in list(self._leases.items()):
                if now - seen > self._stale_s:
                    del self._leases[lease]
            if len(self._leases) >= self._capacity:
                return None
            self._next += 1
            self._leases[self._next] = now
            return self._next

    def renew(self, lease: int) -> None:
        with self._lock:
            if lease in self._leases:
                self._leases[lease] = time.monotonic()

    def release(self, lease: int) -> None:
        with self._lock:
            self._leases.pop(lease, None)

    @property
    def in_use(self) -> int:
        with self._lock:
            return len(self._leases)


def _no_preview() -> ApiError:
    return ApiError(
        503,
        "no_preview",
        "No preview frame is available: the camera has no live view or is not connected.",
        {"Retry-After": "2"},
    )


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, summary="Capture a plate from the configured source"
)
def capture(req: RunRequest, appliance: ApplianceDep, _: OperatorUser) -> Ticket:
    return appliance.intake.capture(req)


@router.get(
    "/preview.jpg",
    summary="The latest preview frame as one JPEG",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def preview_frame(appliance: ApplianceDep) -> Response:
    frame = await run_in_threadpool(appliance.intake.preview_jpeg)
    if frame is None:
        raise _no_preview()
    return Response(frame, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/preview.mjpg",
    summary="Live preview as MJPEG (multipart/x-mixed-replace), throttled",
    response_class=StreamingResponse,
    responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}}},
)
async def preview_stream(
    request: Request,
    appliance: ApplianceDep,
    auth: AuthDep,
    limits: LimitsDep,
    frames: Annotated[
        int, Query(ge=0, le=10_000, description="stop after N frames; 0: no end")
    ] = 0,
) -> StreamingResponse:
    slots: PreviewSlots = request.app.state.preview_slots
    lease = slots.acquire()
    if lease is None:
        raise ApiError(
            503,
            "preview_busy",
            "Too many live previews are open; close one (inference always comes first).",
            {"Retry-After": "5"},
        )
    try:
        first = await run_in_threadpool(appliance.intake.preview_jpeg)
    except BaseException:
        slots.release(lease)
        raise
    if first is None:
        slots.release(lease)
        raise _no_preview()
    token = bearer_token(request) or ""
    interval = 1.0 / limits.preview_max_fps

    async def parts() -> AsyncIterator[bytes]:
        sent = 0
        frame: bytes | None = first
        try:
            # The session is re-checked for every frame: signing out ends the stream.
            while auth.session_for(token) is not None:
                slots.renew(lease)
                if frame is None:
                    frame = await run_in_threadpool(appliance.intake.preview_jpeg)
                if frame is not None:
                    yield (
                        (
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(frame)}\r\n\r\n"
                        ).encode("ascii")
                        + frame
                        + b"\r\n"
                    )
                    sent += 1
                    if frames and sent >= frames:
                        break
                frame = None
                await anyio.sleep(interval)
        finally:
            slots.release(lease)

    return StreamingResponse(
        parts(),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store"},
    )
