"""Admin pages: devices (provision, enrollment bundle, revoke), users, audit log.

The pages refuse non-admins with a 403 page, but that is only courtesy: every read and
change here is an API call that the API itself refuses to anyone but an admin.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from cloud.web.pages import signed_in
from cloud.web.render import PageRoute, error_page, redirect, render
from cloud.web.session import Api, ApiProblem, check_origin

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)
ROLES = ("viewer", "manager", "admin")


async def admin_only(request: Request) -> tuple[Api, dict[str, Any], Response | None]:
    api, me = await signed_in(request)
    if me["role"] != "admin":
        return api, me, error_page(request, 403, "This page is for administrators.", me=me)
    return api, me, None


async def _devices_page(
    request: Request,
    api: Api,
    me: dict[str, Any],
    *,
    bundle: dict[str, Any] | None = None,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    sites = await api.call("GET", "/api/v1/sites")
    devices = await api.call("GET", "/api/v1/devices")
    names = {s["id"]: s for s in sites}
    download = None
    if bundle is not None:
        raw = json.dumps(bundle, indent=2).encode("utf-8")
        download = {
            "href": "data:application/json;base64," + base64.b64encode(raw).decode("ascii"),
            "filename": f"enroll-{bundle['site']}-{bundle['device']}.json",
        }
    context = {
        "me": me,
        "sites": sites,
        "site_by_id": names,
        "devices": devices,
        "bundle": bundle,
        "download": download,
        "error": error,
        "form": form or {},
        "flash": request.query_params.get("revoked"),
    }
    # The bundle holds the device's secrets: never cache the page that shows it.
    return render(request, "devices.html", context, api=api, status=status, no_store=True)


@router.get("/devices")
async def devices_page(request: Request) -> Response:
    api, me, refused = await admin_only(request)
    if refused is not None:
        return refused
    return await _devices_page(request, api, me)


@router.post("/devices")
async def provision(
    request: Request,
    site_id: Annotated[str, Form(max_length=64)] = "",
    slug: Annotated[str, Form(max_length=64)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_origin(request)
    api, me = await signed_in(request)
    form = {"site_id": site_id, "slug": slug, "name": name}
    try:
        site = uuid.UUID(site_id)
    except ValueError:
        return await _devices_page(
            request, api, me, error="Choose the device's site.", form=form, status=422
        )
    try:
        bundle = await api.call(
            "POST",
            "/api/v1/devices",
            json={"site_id": str(site), "slug": slug.strip(), "name": name.strip()},
        )
    except ApiProblem as exc:
        if exc.status == 403:
            raise
        message = exc.detail
        if exc.status == 422 and "slug" in exc.detail:
            message = (
                "Device name in topics: 2–40 lower-case letters, digits or '-', "
                "not starting or ending with '-'."
            )
        return await _devices_page(request, api, me, error=message, form=form, status=exc.status)
    logger.info("device %s/%s provisioned from the dashboard", bundle["site"], bundle["device"])
    return await _devices_page(request, api, me, bundle=bundle, status=201)


@router.post("/devices/{device_id}/revoke")
async def revoke(request: Request, device_id: uuid.UUID) -> Response:
    check_origin(request)
    api, _me = await signed_in(request)
    device = await api.call("POST", f"/api/v1/devices/{device_id}/revoke")
    return redirect(f"/ui/devices?revoked={device['mqtt_username']}", api=api)


@router.get("/users")
async def users_page(request: Request) -> Response:
    api, me, refused = await admin_only(request)
    if refused is not None:
        return refused
    return await _users_page(request, api, me)


async def _users_page(
    request: Request,
    api: Api,
    me: dict[str, Any],
    *,
    error: str | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    users = await api.call("GET", "/api/v1/users", params={"limit": 500})
    sites = await api.call("GET", "/api/v1/sites")
    context = {
        "me": me,
        "users": users,
        "sites": sites,
        "site_names": {s["id"]: s["name"] for s in sites},
        "roles": ROLES,
        "error": error,
        "form": form or {},
        "flash": request.query_params.get("done"),
    }
    return render(request, "users.html", context, api=api, status=status)


@router.post("/users")
async def invite(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    full_name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=16)] = "viewer",
    site_ids: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Create the account with a random password nobody sees, then send a reset e-mail:
    the invitee chooses their own password through the reset link."""
    check_origin(request)
    api, me = await signed_in(request)
    form = {"email": email, "full_name": full_name, "role": role, "site_ids": site_ids or []}
    body = {
        "email": email.strip(),
        "full_name": full_name.strip(),
        "role": role,
        "site_ids": list(site_ids or []),
        "password": secrets.token_urlsafe(32),
    }
    try:
        await api.call("POST", "/api/v1/users", json=body)
    except ApiProblem as exc:
        if exc.status == 403:
            raise
        message = exc.detail
        if exc.status == 422 and "email" in exc.detail:
            message = "Enter a valid e-mail address."
        return await _users_page(request, api, me, error=message, form=form, status=exc.status)
    await api.anonymous(
        "POST", "/api/v1/auth/password-reset/request", json={"email": email.strip()}
    )
    return redirect(f"/ui/users?done=invited+{email.strip()}", api=api)


@router.post("/users/{user_id}")
async def update_user(
    request: Request,
    user_id: uuid.UUID,
    role: Annotated[str, Form(max_length=16)] = "",
    site_ids: Annotated[list[str] | None, Form()] = None,
    active: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    check_origin(request)
    api, me = await signed_in(request)
    body = {"role": role or None, "site_ids": list(site_ids or []), "is_active": active == "on"}
    try:
        user = await api.call("PATCH", f"/api/v1/users/{user_id}", json=body)
    except ApiProblem as exc:
        if exc.status in (403, 404):
            raise
        return await _users_page(request, api, me, error=exc.detail, status=exc.status)
    return redirect(f"/ui/users?done=updated+{user['email']}", api=api)


@router.get("/audit")
async def audit_page(
    request: Request,
    action: Annotated[str, Query(max_length=64)] = "",
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    api, me, refused = await admin_only(request)
    if refused is not None:
        return refused
    params: dict[str, Any] = {"limit": 100}
    if action.strip():
        params["action"] = action.strip()
    if before_id is not None:
        params["before_id"] = before_id
    entries = await api.call("GET", "/api/v1/audit", params=params)
    users = await api.call("GET", "/api/v1/users", params={"limit": 500})
    sites = await api.call("GET", "/api/v1/sites")
    devices = await api.call("GET", "/api/v1/devices")
    # Names, not UUIDs (core.present.name_or_id): users by e-mail, sites and devices by name.
    site_names = {str(s["id"]): s["name"] for s in sites}
    names = {
        **site_names,
        **{
            str(
                d["id"]
            ): f"{d.get('name') or d.get('slug')} ({site_names.get(str(d['site_id']), '?')})"
            for d in devices
        },
        **{str(u["id"]): u["email"] for u in users},
    }
    context = {
        "me": me,
        "entries": entries,
        "names": names,
        "action": action,
        "older": entries[-1]["id"] if len(entries) == 100 else None,
    }
    return render(request, "audit.html", context, api=api)
