"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cloud.api.deps import ReleasingRoute, StateDep
from cloud.fleet_metrics import fleet_exposition

logger = logging.getLogger(__name__)
router = APIRouter(tags=["ops"], route_class=ReleasingRoute)


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up. Says nothing about its dependencies (see /ready)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {}})
def ready(state: StateDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        logger.warning("readiness: database unavailable (%s)", type(exc).__name__)
        checks["database"] = "unavailable"
    if state.store is not None:
        checks["object_storage"] = "ok" if state.store.ping() else "unavailable"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


@router.get("/metrics", response_class=Response, responses={401: {}})
def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics, for the bearer of `metrics_token` only (as on the appliance): route
    names, rates, latencies and the fleet's device slugs tell an outsider too much. No token
    set: nobody."""
    token = state.settings.metrics_token
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if (
        token is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode())
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Metrics need the metrics token (Authorization: Bearer <metrics_token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body = generate_latest() + fleet_exposition(state.read_engine)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
