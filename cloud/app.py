"""The FastAPI application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.api import audit, auth, device_api, devices, models, ops, results, sites, users, ws
from cloud.broadcast import Broadcaster, NotifyListener, libpq_conninfo
from cloud.db import make_engine, make_read_engine, make_sessionmaker
from cloud.headers import SecurityHeaders
from cloud.inputguard import ControlCharGuard
from cloud.ratelimit import SlidingWindowLimiter
from cloud.settings import CloudSettings, load_settings
from cloud.state import AppState
from cloud.storage import ObjectStore, StorageError
from cloud.web import mount_dashboard

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
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def walk_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every concrete route, descending into included routers (the access matrix uses it)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from walk_routes(original.routes)
        else:
            yield route


class MetricsMiddleware:
    """Request count and latency per route template (plain ASGI: no per-request task hop)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)
            REQUESTS.labels(scope["method"], route, str(status_code)).inc()


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
        read_engine=make_read_engine(settings),
        reset_limiter=SlidingWindowLimiter(
            limit=settings.reset_rate_per_hour, window_seconds=3600.0
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # No more worker threads than pooled connections: excess requests then wait in the
        # event loop (holding nothing) instead of in threads that each hold a connection.
        to_thread.current_default_thread_limiter().total_tokens = settings.db_pool_size
        listener = None
        if listen:
            listener = NotifyListener(libpq_conninfo(settings.database_url), state.broadcaster)
            listener.start(wait=2.0)
        try:
            yield
        finally:
            if listener is not None:
                listener.stop()
            engine.dispose()
            state.read_engine.dispose()

    app = FastAPI(
        title="Microplate cloud",
        version="0.1.0",
        description="Results of HI plate reads from every appliance, for managers and admins.",
        lifespan=lifespan,
    )
    app.state.microplate = state
    for module in (ops, auth, users, sites, devices, device_api, models, results, audit, ws):
        app.include_router(module.router)
    # The managers' pages (docs/dashboard.md); after the API so its catch-all 404 page is last.
    mount_dashboard(app)

    app.add_middleware(ControlCharGuard)
    app.add_middleware(SecurityHeaders, trusted_proxies=settings.trusted_proxies)
    app.add_middleware(MetricsMiddleware)

    @app.exception_handler(SQLAlchemyTimeout)
    @app.exception_handler(OperationalError)
    async def database_busy(request: Request, exc: Exception) -> JSONResponse:
        # Pool exhausted or database unreachable: the client can retry, it is not a bug.
        logger.warning("database unavailable on %s: %s", _route_name(request), type(exc).__name__)
        return JSONResponse(
            {"detail": "The service is busy or its database is unavailable; retry shortly."},
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(IntegrityError)
    async def conflict(request: Request, exc: IntegrityError) -> JSONResponse:
        # A race between two requests creating the same thing: the loser gets a clear 409.
        logger.info("integrity conflict on %s", _route_name(request))
        return JSONResponse(
            {"detail": "This conflicts with data that already exists; reload and retry."},
            status_code=409,
        )

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
