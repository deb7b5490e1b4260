"""The managers' dashboard: server-rendered pages under /ui over the cloud's JSON API.

`mount_dashboard(app)` adds the page routes, the static files and the page error handlers to
the cloud application. See docs/dashboard.md.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from cloud.web import admin, auth_pages, chart_data, live, models, pages, sites
from cloud.web.render import HERE, error_page, on_api_problem, on_csrf, on_sign_in_required
from cloud.web.session import ApiProblem, CsrfRefused, SignInRequired

__all__ = ["mount_dashboard"]


def mount_dashboard(app: FastAPI) -> None:
    """Add the dashboard to the cloud app, after the API routers; a second call does nothing."""
    if getattr(app.state, "dashboard_mounted", False):
        return
    app.state.dashboard_mounted = True
    for module in (auth_pages, pages, admin, models, sites, live, chart_data):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(ApiProblem, on_api_problem)
    app.add_exception_handler(CsrfRefused, on_csrf)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    # Unknown dashboard paths get the dashboard's 404 page, not the API's JSON.
    @app.api_route("/ui/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def ui_not_found(request: Request, path: str) -> Response:
        return error_page(request, 404, "There is no such page.")
