"""The models page: each device's model and rollout state (managers: their sites), and for
admins the published releases, assignment (canary first), promotion and switch confirmation.

As elsewhere on the dashboard every read and change is an API call the API authorises.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from cloud.web.pages import signed_in
from cloud.web.render import PageRoute, error_page, redirect, render
from cloud.web.session import Api, ApiProblem, check_origin

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)


async def _page(
    request: Request,
    api: Api,
    me: dict[str, Any],
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    sites = await api.call("GET", "/api/v1/sites")
    devices = await api.call("GET", "/api/v1/devices")
    rollouts = await api.call("GET", "/api/v1/models/rollouts")
    admin = me["role"] == "admin"
    releases = await api.call("GET", "/api/v1/models") if admin else []
    assignments = await api.call("GET", "/api/v1/models/assignments") if admin else []
    latest: dict[str, dict[str, Any]] = {}
    for r in rollouts:  # newest assignment first: the first row per device is its rollout
        latest.setdefault(r["device_id"], r)
    context = {
        "me": me,
        "site_by_id": {s["id"]: s for s in sites},
        "sites": sites,
        "devices": devices,
        "latest": latest,
        "releases": releases,
        "assignments": assignments,
        "error": error,
    }
    return render(request, "models.html", context, api=api, status=status)


@router.get("/models")
async def models_page(request: Request) -> Response:
    api, me = await signed_in(request)
    if me["role"] == "viewer":
        return error_page(request, 403, "This page is for managers and administrators.", me=me)
    return await _page(request, api, me)


@router.post("/models/assign")
async def assign(
    request: Request,
    release: Annotated[str, Form(max_length=140)] = "",
    site_id: Annotated[str, Form(max_length=64)] = "",
    canary: Annotated[str, Form(max_length=64)] = "",
    devices: Annotated[str, Form(max_length=4000)] = "",
    shadow_plates: Annotated[int, Form(ge=1, le=10_000)] = 20,
    agreement_threshold: Annotated[float, Form(ge=0.5, le=1.0)] = 0.98,
) -> Response:
    check_origin(request)
    api, me = await signed_in(request)
    name, _, version = release.partition(" ")
    try:
        site = str(uuid.UUID(site_id))
    except ValueError:
        return await _page(request, api, me, error="Choose a site.", status=422)
    group = [d.strip() for d in devices.replace(",", " ").split() if d.strip()]
    body: dict[str, Any] = {
        "name": name,
        "version": version,
        "site_id": site,
        "canary": canary.strip(),
        "shadow_plates": shadow_plates,
        "agreement_threshold": agreement_threshold,
        "devices": group or None,
    }
    try:
        await api.call("POST", "/api/v1/models/assignments", json=body)
    except ApiProblem as exc:
        if exc.status == 403:
            raise
        return await _page(request, api, me, error=exc.detail, status=exc.status)
    return redirect("/ui/models", api=api)


@router.post("/models/assignments/{assignment_id}/{action}")
async def change(request: Request, assignment_id: uuid.UUID, action: str) -> Response:
    check_origin(request)
    api, me = await signed_in(request)
    if action not in ("promote", "confirm"):
        return error_page(request, 404, "There is no such page.", me=me)
    try:
        await api.call("POST", f"/api/v1/models/assignments/{assignment_id}/{action}")
    except ApiProblem as exc:
        if exc.status == 403:
            raise
        return await _page(request, api, me, error=exc.detail, status=exc.status)
    return redirect("/ui/models", api=api)
