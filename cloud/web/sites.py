"""Admin page for sites: create, rename, disable and enable again.

Like every admin page this only calls the JSON API as the signed-in user; the API refuses
non-admins. A disabled site keeps its results; its devices lose their broker accounts and
API tokens (the broker files are rewritten at once) and no device can be provisioned for it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from cloud.web.admin import admin_only
from cloud.web.pages import signed_in
from cloud.web.render import PageRoute, redirect, render
from cloud.web.session import Api, ApiProblem, check_origin

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)
SLUG_HELP = "Site id (in MQTT topics): 2–40 lower-case letters, digits or '-', not at either end."


async def _sites_page(
    request: Request,
    api: Api,
    me: dict[str, Any],
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    sites = await api.call("GET", "/api/v1/sites")
    devices = await api.call("GET", "/api/v1/devices")
    counts: dict[str, int] = {}
    for d in devices:
        if d["status"] == "active":
            counts[d["site_id"]] = counts.get(d["site_id"], 0) + 1
    context = {
        "me": me,
        "sites": sites,
        "active_devices": counts,
        "error": error,
        "form": form or {},
        "flash": request.query_params.get("done"),
    }
    return render(request, "sites.html", context, api=api, status=status)


@router.get("/sites")
async def sites_page(request: Request) -> Response:
    api, me, refused = await admin_only(request)
    if refused is not None:
        return refused
    return await _sites_page(request, api, me)


@router.post("/sites")
async def create_site(
    request: Request,
    slug: Annotated[str, Form(max_length=64)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_origin(request)
    api, me = await signed_in(request)
    form = {"slug": slug, "name": name}
    try:
        site = await api.call(
            "POST", "/api/v1/sites", json={"slug": slug.strip(), "name": name.strip()}
        )
    except ApiProblem as exc:
        if exc.status == 403:
            raise
        message = SLUG_HELP if exc.status == 422 and "slug" in exc.detail else exc.detail
        if exc.status == 422 and "name" in exc.detail and "slug" not in exc.detail:
            message = "Give the site a name."
        return await _sites_page(request, api, me, error=message, form=form, status=exc.status)
    return redirect(f"/ui/sites?done={quote('created ' + site['slug'])}", api=api)


async def _update(
    request: Request, site_id: uuid.UUID, body: dict[str, Any], done: str
) -> Response:
    check_origin(request)
    api, me = await signed_in(request)
    try:
        site = await api.call("PATCH", f"/api/v1/sites/{site_id}", json=body)
    except ApiProblem as exc:
        if exc.status in (403, 404):
            raise
        message = "Give the site a name." if exc.status == 422 else exc.detail
        return await _sites_page(request, api, me, error=message, status=exc.status)
    return redirect(f"/ui/sites?done={quote(done + ' ' + site['slug'])}", api=api)


@router.post("/sites/{site_id}/rename")
async def rename_site(
    request: Request, site_id: uuid.UUID, name: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    return await _update(request, site_id, {"name": name.strip()}, "renamed")


@router.post("/sites/{site_id}/disable")
async def disable_site(request: Request, site_id: uuid.UUID) -> Response:
    return await _update(request, site_id, {"enabled": False}, "disabled")


@router.post("/sites/{site_id}/enable")
async def enable_site(request: Request, site_id: uuid.UUID) -> Response:
    return await _update(request, site_id, {"enabled": True}, "enabled")


@router.post("/sites/{site_id}/training")
async def training(
    request: Request, site_id: uuid.UUID, allow: Annotated[str, Form(max_length=8)] = ""
) -> Response:
    """Switch "allow corrected plates for training" on or off (off by default)."""
    on = allow == "on"
    return await _update(
        request, site_id, {"allow_training": on}, "training on" if on else "training off"
    )
