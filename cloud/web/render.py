"""Templates, the page response (cookies, security headers) and error pages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from cloud.web.session import Api, ApiProblem, CsrfRefused, SignInRequired, clear_session
from core import present

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

# Pages load only their own script, styles and images; no framing, no foreign form targets.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)


def _when(value: Any) -> str:
    if value is None or value == "":
        return "–"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return str(when.strftime("%Y-%m-%d %H:%M UTC"))


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{float(value):.{digits}f}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.1f} %"


def _titre(value: Any, flags: Any = (), start_dilution: Any = None) -> str:
    return present.titre_text(
        None if value is None else float(value),
        flags or (),
        start_dilution=int(start_dilution) if start_dilution else None,
    )


templates.env.filters["when"] = _when
templates.env.filters["num"] = _num
templates.env.filters["pct"] = _pct
# What the appliance shows the same way (core.present): censored titres, flags, units, ids.
templates.env.filters["titre"] = _titre
templates.env.filters["flag"] = present.flag_text
templates.env.filters["bytes"] = present.bytes_text
templates.env.filters["name_or_id"] = present.name_or_id


def secure_headers(response: Response, *, no_store: bool = False) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store" if no_store else "private, no-cache"
    return response


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    api: Api | None = None,
    no_store: bool = False,
) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    secure_headers(response, no_store=no_store)
    if api is not None:
        api.finish(response)
    return response


def redirect(url: str, *, api: Api | None = None, status: int = 303) -> Response:
    response = RedirectResponse(url, status_code=status)
    if api is not None:
        api.finish(response)
    return response


def login_url(request: Request) -> str:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return "/ui/login?next=" + quote(target, safe="")


_TITLES = {
    400: "The request could not be used",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Check the form",
    429: "Too many requests",
    503: "Service busy",
}


def error_page(
    request: Request, status: int, message: str, *, me: dict[str, Any] | None = None
) -> Response:
    code = status if status in _TITLES else 500
    if code == 500:
        message = "Something went wrong on our side; it has been logged. Please try again."
    api: Api | None = getattr(request.state, "dash_api", None)
    if me is None and api is not None:
        me = getattr(request.state, "dash_me", None)
    return render(
        request,
        "error.html",
        {"me": me, "status": code, "title": _TITLES.get(code, "Error"), "message": message},
        status=code,
        api=api,
    )


async def on_sign_in_required(request: Request, exc: Exception) -> Response:
    response = RedirectResponse(login_url(request), status_code=303)
    clear_session(response, secure=request.url.scheme == "https")
    return response


async def on_api_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    if exc.status >= 500:
        logger.warning("API answered %s behind %s", exc.status, request.url.path)
    return error_page(request, exc.status, exc.detail)


async def on_csrf(request: Request, exc: Exception) -> Response:
    logger.warning("refused a cross-origin %s to %s: %s", request.method, request.url.path, exc)
    return error_page(
        request,
        403,
        "This form was not sent from a page of this dashboard. Reload the page and try again.",
    )


class PageRoute(APIRoute):
    """Page routes answer HTML: bad path/query values and unexpected errors become pages.

    The app-wide handlers answer JSON for the API; a person on a page must never see that.
    Session, API and CSRF outcomes pass through to their own handlers (registered by
    `mount_dashboard`).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiProblem, SignInRequired, CsrfRefused, HTTPException):
                raise
            except RequestValidationError as exc:
                in_path = any(err.get("loc", ("",))[0] == "path" for err in exc.errors())
                if in_path:
                    return error_page(request, 404, "There is no such page.")
                return error_page(request, 400, "A value in the address is not valid.")
            except Exception:
                logger.exception("page %s failed", request.url.path)
                return error_page(request, 500, "")

        return page_handler
