"""The appliance's HTTP API: ``create_app(appliance)`` returns the FastAPI application.

Routes call the services of ``edge.app.Appliance`` (never SQL). Every route but ``/health`` and
the sign-in needs a session; see ``edge.auth`` and ``docs/edge-api.md``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from edge.api import auth as auth_routes
from edge.api import calibration, capture, events, runs, runtime_settings, samples, system
from edge.api.capture import PreviewSlots
from edge.api.errors import install_error_handlers
from edge.api.limits import ApiLimits
from edge.api.middleware import BodyLimitMiddleware, HeadersAndAccessLogMiddleware
from edge.app import Appliance
from edge.auth import AuthConfig, Authenticator, load_credentials

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def create_app(
    appliance: Appliance,
    *,
    auth_config: AuthConfig | None = None,
    limits: ApiLimits | None = None,
) -> FastAPI:
    """Build the API around a (started or not) appliance.

    Raises ``edge.auth.AuthConfigError`` when production mode lacks proper credentials.
    The appliance's lifecycle stays with the caller (``edge.api.server.serve`` or a test).
    """
    config = auth_config or AuthConfig.from_settings(appliance.settings)
    limits = limits or ApiLimits.from_settings(appliance.settings)
    credentials = load_credentials(config)
    app = FastAPI(
        title="Microplate appliance API",
        version=_version(),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by system.docs_router, behind a session
    )
    app.state.appliance = appliance
    app.state.limits = limits
    app.state.authenticator = Authenticator(config, credentials, appliance.audit.record)
    # Where development credentials were generated (None otherwise): the demo prints it.
    app.state.generated_credentials = credentials.generated_in
    app.state.preview_slots = PreviewSlots(
        limits.preview_max_streams, stale_s=max(10.0, 5.0 / limits.preview_max_fps)
    )
    install_error_handlers(app)
    for router in (
        system.router,
        system.operator_router,
        auth_routes.router,
        runs.router,
        samples.router,
        calibration.router,
        capture.router,
        runtime_settings.router,
        events.router,
    ):
        app.include_router(router)
    if config.docs_enabled:
        app.include_router(system.docs_router)
    app.add_middleware(BodyLimitMiddleware, limits=limits)
    app.add_middleware(HeadersAndAccessLogMiddleware)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("microplate")
    except PackageNotFoundError:
        return "0.0.0"
