"""Page routes of the touchscreen UI and the ``/static`` mount.

A page needs a session like the API does: without one it redirects to the sign-in page
(a kiosk must land somewhere usable, not on a JSON 401). The pages render only layout and
words; their data comes from the JSON API, so the API's role checks stay the only ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

import edge.ui.i18n as i18n
from edge.api.deps import bearer_token, principal_for

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

# Everything comes from the appliance itself: no CDN, no inline script, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# Navigation, in order: (page key, path, supervisor-only marker shown on the tab).
NAV: list[tuple[str, str, bool]] = [
    ("capture", "/ui/capture", False),
    ("samples", "/ui/samples", False),
    ("review", "/ui/review", False),
    ("status", "/ui/status", False),
    ("calibration", "/ui/calibration", True),
    ("settings", "/ui/settings", True),
]

router = APIRouter(include_in_schema=False)

RunId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
SampleNumber = Annotated[str, PathParam(min_length=1, max_length=64)]


def mount_ui(app: FastAPI, appliance: Any) -> None:
    """Add the pages and ``/static`` to the API app built by ``edge.api.create_app``."""
    app.state.ui_appliance = appliance
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)


def _language(request: Request) -> str:
    appliance = getattr(request.app.state, "ui_appliance", None)
    # The kiosk's cookie wins; else the appliance's runtime default, if the UI speaks it.
    runtime = appliance.runtime.get() if appliance is not None else None
    return i18n.choose(request.cookies.get(i18n.LANG_COOKIE), getattr(runtime, "language", None))


def appliance_languages() -> dict[str, str]:
    """Languages the appliance's runtime setting accepts and the UI has words for."""
    from edge.schemas import RuntimeSettings

    accepted = _literal_values(RuntimeSettings.model_fields["language"].annotation)
    return {code: name for code, name in i18n.LANGUAGES.items() if code in accepted}


def _literal_values(annotation: Any) -> set[str]:
    values: set[str] = set()
    for arg in get_args(annotation):
        if get_args(arg):
            values |= _literal_values(arg)
        elif isinstance(arg, str):
            values.add(arg)
    return values


def _json_for_html(value: Any) -> Markup:
    # Inside <script type="application/json">: "</script>" must not end the element early.
    text = json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text)  # noqa: S704 - escaped above for this one context


def _render(request: Request, template: str, page: str, **context: Any) -> Response:
    lang = _language(request)
    strings = i18n.strings(lang)
    principal = principal_for(request, bearer_token(request))
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": strings,
            "lang": lang,
            "languages": i18n.LANGUAGES,
            "page": page,
            "nav": NAV,
            "role": principal.role if principal else None,
            "boot": _json_for_html({"lang": lang, "strings": strings, "page": page, **context}),
            **context,
        },
    )
    response.headers["Content-Security-Policy"] = CSP
    return response


def _signed_in(request: Request) -> bool:
    return principal_for(request, bearer_token(request)) is not None


def _to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path
    return RedirectResponse(f"/ui/sign-in?next={quote(target, safe='/')}", status_code=303)


def _safe_next(value: str | None) -> str:
    # Only our own pages: never an absolute or protocol-relative URL (open redirect).
    if value and value.startswith("/ui/") and "//" not in value and "\\" not in value:
        return value
    return "/ui/capture"


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/capture", status_code=303)


@router.get("/ui/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, next: str | None = None) -> Response:
    target = _safe_next(next)
    if _signed_in(request):
        return RedirectResponse(target, status_code=303)
    return _render(request, "sign_in.html", "sign-in", next=target)


def _page(template: str, page: str) -> Any:
    def view(request: Request) -> Response:
        if not _signed_in(request):
            return _to_sign_in(request)
        extra = {"appliance_languages": appliance_languages()} if page == "settings" else {}
        return _render(request, template, page, **extra)

    view.__name__ = f"{page}_page"
    return view


for _key, _path, _ in NAV:
    router.add_api_route(_path, _page(f"{_key}.html", _key), methods=["GET"])


@router.get("/ui/runs/{run_id}", response_class=HTMLResponse)
def result_page(request: Request, run_id: RunId) -> Response:
    if not _signed_in(request):
        return _to_sign_in(request)
    return _render(request, "result.html", "result", run_id=run_id)


@router.get("/ui/samples/{sample_number}", response_class=HTMLResponse)
def sample_page(request: Request, sample_number: SampleNumber) -> Response:
    if not _signed_in(request):
        return _to_sign_in(request)
    return _render(request, "sample.html", "sample", sample_number=sample_number)


@router.get("/ui/review/{run_id}", response_class=HTMLResponse)
def review_run_page(request: Request, run_id: RunId) -> Response:
    if not _signed_in(request):
        return _to_sign_in(request)
    return _render(request, "review_run.html", "review-run", run_id=run_id)
