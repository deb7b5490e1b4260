"""Sign in, sign out and password reset pages (forms posting to the JSON auth API)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from cloud.web.render import PageRoute, redirect, render
from cloud.web.session import Api, SignInRequired, api_detail, check_origin, clear_session

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False, route_class=PageRoute)


def safe_next(target: str | None) -> str:
    """Only a path of this dashboard; never another host (open redirect)."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"me": None, "next": safe_next(next), "error": None})


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/ui/",
) -> Response:
    check_origin(request)
    target = safe_next(next)
    context: dict[str, Any] = {"me": None, "next": target, "email": email}
    if not email.strip() or not password:
        context["error"] = "Enter your e-mail address and your password."
        return render(request, "login.html", context, status=422)
    api = Api(request)
    resp = await api.anonymous(
        "POST", "/api/v1/auth/login", json={"email": email.strip(), "password": password}
    )
    if resp.status_code != 200:
        if resp.status_code == 401:
            context["error"] = "Incorrect e-mail or password."
        elif resp.status_code == 429:
            context["error"] = api_detail(resp) + ". Wait a few minutes before trying again."
        else:
            context["error"] = "Signing in failed: " + api_detail(resp)
        status = resp.status_code if resp.status_code < 500 else 503
        return render(request, "login.html", context, status=status)
    api.adopt(resp.json())
    return redirect(target, api=api)


@router.post("/logout")
async def logout(request: Request) -> Response:
    check_origin(request)
    api = Api(request)
    if api.refresh:
        # The API revokes the whole refresh family; a failure still ends the browser session.
        await api.anonymous("POST", "/api/v1/auth/logout", json={"refresh_token": api.refresh})
    response = redirect("/ui/login")
    clear_session(response, secure=request.url.scheme == "https")
    return response


@router.get("/ping")
async def ping(request: Request) -> Response:
    """Refresh the session cookies if needed (the live-update script calls it first)."""
    api = Api(request)
    try:
        await api.call("GET", "/api/v1/auth/me")
    except SignInRequired:
        response = Response(status_code=401)
        clear_session(response, secure=request.url.scheme == "https")
        return response
    return api.finish(Response(status_code=204))


@router.get("/reset")
async def reset_form(request: Request) -> Response:
    return render(request, "reset.html", {"me": None, "error": None, "sent": False})


@router.post("/reset")
async def reset_request(
    request: Request, email: Annotated[str, Form(max_length=320)] = ""
) -> Response:
    check_origin(request)
    if not email.strip():
        context = {"me": None, "error": "Enter the e-mail address of your account.", "sent": False}
        return render(request, "reset.html", context, status=422)
    api = Api(request)
    resp = await api.anonymous(
        "POST", "/api/v1/auth/password-reset/request", json={"email": email.strip()}
    )
    if resp.status_code >= 400:
        context = {"me": None, "error": api_detail(resp), "sent": False}
        return render(request, "reset.html", context, status=min(resp.status_code, 503))
    # Same answer whether or not the address has an account.
    return render(request, "reset.html", {"me": None, "error": None, "sent": True})


@router.get("/reset/confirm")
async def reset_confirm_form(request: Request) -> Response:
    return render(request, "reset_confirm.html", {"me": None, "error": None, "done": False})


@router.post("/reset/confirm")
async def reset_confirm(
    request: Request,
    token: Annotated[str, Form(max_length=256)] = "",
    new_password: Annotated[str, Form(max_length=256)] = "",
    repeat_password: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    check_origin(request)
    error = None
    if len(token.strip()) < 16:
        error = "Paste the whole reset token from the e-mail."
    elif len(new_password) < 12:
        error = "The new password needs at least 12 characters."
    elif new_password != repeat_password:
        error = "The two passwords differ."
    if error is None:
        api = Api(request)
        resp = await api.anonymous(
            "POST",
            "/api/v1/auth/password-reset/confirm",
            json={"token": token.strip(), "new_password": new_password},
        )
        if resp.status_code == 204:
            return render(request, "reset_confirm.html", {"me": None, "error": None, "done": True})
        error = api_detail(resp)
        if resp.status_code == 400:
            error = "That reset token is invalid, used or expired; request a new one."
    context = {"me": None, "error": error, "done": False}
    return render(request, "reset_confirm.html", context, status=400)
