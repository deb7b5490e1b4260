"""The FastAPI application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from starlette.routing import Match

from cloud.api import audit, auth, device_api, devices, ops, sites, users, ws
from cloud.broadcast import Broadcaster, NotifyListener, libpq_conninfo
from cloud.db import make_engine, make_sessionmaker
from cloud.ratelimit import SlidingWindowLimiter
from cloud.settings import CloudSettings, load_settings
from cloud.state import AppState
from cloud.storage import ObjectStore, StorageError

logger = logging.getLogger(__name__)

REQUESTS = Counter("microplate_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "microplate_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def _route_name(request: Request) -> str:
    # The route template, not the raw path: ids in paths would explode label cardinality.
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


def create_app(settings: CloudSettings | None = None, *, listen: bool = True) -> FastAPI:
    settings = settings or load_settings()
    engine = make_engine(settings)
    store: ObjectStore | None = None
    if settings.s3_endpoint_url or settings.s3_access_key:
        try:
            store = ObjectStore(settings)
        except StorageError as exc:
            logger.error("object storage disabled: %s", exc)
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        store=store,
        broadcaster=Broadcaster(),
        login_limiter=SlidingWindowLimiter(limit=settings.login_rate_per_minute),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        listener = None
        if listen:
            listener = NotifyListener(libpq_conninfo(settings.database_url), state.broadcaster)
            listener.start()
        try:
            yield
        finally:
            if listener is not None:
                listener.stop()
            engine.dispose()

    app = FastAPI(
        title="Microplate cloud",
        version="0.1.0",
        description="Results of HI plate reads from every appliance, for managers and admins.",
        lifespan=lifespan,
    )
    app.state.microplate = state
    for module in (ops, auth, users, sites, devices, device_api, audit, ws):
        app.include_router(module.router)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = _route_name(request)
        LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Echo where and what, never the submitted values (they may hold passwords).
        errors = [
            {
                "loc": list(err.get("loc", ())),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error(
            "unhandled error on %s %s",
            request.method,
            _route_name(request),
            exc_info=exc,
        )
        return JSONResponse(
            {"detail": "Internal error; it has been logged. Please try again later."},
            status_code=500,
        )

    return app
