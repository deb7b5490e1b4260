"""Liveness, readiness, Prometheus metrics, appliance status and the OpenAPI docs.

``/health`` is the only open route and says nothing but "ok". ``/ready`` and ``/metrics``
take an operator session or the metrics token (for Prometheus). The OpenAPI schema and the
Swagger UI need an operator session too, and are off in production unless
``auth.docs_enabled`` is set: they describe the attack surface, and the kiosk never needs them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from edge.api.deps import ApplianceDep, ScraperUser, require_operator
from edge.schemas import ApplianceStatus, Readiness

router = APIRouter(tags=["system"])
operator_router = APIRouter(tags=["system"], dependencies=[Depends(require_operator)])


@router.get("/health", summary="Liveness (open; reveals nothing)")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: store open, model loaded and warmed up, workers running",
    responses={503: {"model": Readiness, "description": "not ready"}},
)
def ready(appliance: ApplianceDep, _: ScraperUser) -> Any:
    readiness = appliance.health.readiness()
    if not readiness.ready:
        return JSONResponse(readiness.model_dump(mode="json"), status_code=503)
    return readiness


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(appliance: ApplianceDep, _: ScraperUser) -> Response:
    # Gauges are read live at scrape time (some touch the disk or the store): keep that off
    # the event loop.
    body = await run_in_threadpool(generate_latest, appliance.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@operator_router.get("/api/status", summary="Camera, model, sync backlog, disk, version")
def appliance_status(appliance: ApplianceDep) -> ApplianceStatus:
    return appliance.health.status()


docs_router = APIRouter(dependencies=[Depends(require_operator)], include_in_schema=False)


@docs_router.get("/openapi.json")
def openapi_schema(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs_router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Microplate appliance API")
