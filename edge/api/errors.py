"""Every error leaves the API as ``{"error": {"code": ..., "message": ...}}``, never a trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.calibration import CalibrationError
from edge.auth import AuthError
from edge.errors import ApplianceError, Busy, CaptureUnavailable

logger = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "locked_out",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the API raises itself, with the status and operator-facing message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        out.append({"field": loc or "body", "problem": str(err.get("msg", "invalid"))})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        if exc.retry_after > 0:
            return error_response(
                429, exc.code, exc.message, {"Retry-After": str(int(exc.retry_after) + 1)}
            )
        return error_response(401, exc.code, exc.message, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ApplianceError)
    async def _appliance_error(_: Request, exc: ApplianceError) -> JSONResponse:
        status = exc.http_status
        if status >= 500 and status not in (503, 507):
            # A plain ApplianceError is still an operator-facing refusal, not a crash.
            logger.warning("Appliance refused %s: %s", exc.code, exc.message)
            status = 400
        headers = {}
        if isinstance(exc, Busy):
            headers["Retry-After"] = str(exc.retry_after_s)
        elif isinstance(exc, CaptureUnavailable):
            headers["Retry-After"] = "5"
        return error_response(status, exc.code, exc.message, headers)

    @app.exception_handler(CalibrationError)
    async def _calibration_error(_: Request, exc: CalibrationError) -> JSONResponse:
        return error_response(
            422, "invalid_calibration", f"The calibration grid was refused: {exc}"
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(exc)
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
        return error_response(
            422, "invalid_input", f"The request was not valid ({summary}).", fields=fields
        )

    @app.exception_handler(ValidationError)
    async def _model_error(request: Request, exc: ValidationError) -> JSONResponse:
        # A model built inside a service from what the user sent (e.g. merged settings).
        logger.warning("Validation failed inside %s %s", request.method, request.url.path)
        fields = [
            {"field": ".".join(str(p) for p in e.get("loc", ())) or "body", "problem": e["msg"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:5])
        return error_response(
            422, "invalid_input", f"The request was not valid ({summary}).", fields=fields
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = "There is nothing at this address."
        if exc.status_code == 405:
            message = "This address does not accept that method."
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a user error: log it with the trace for us, show a plain message to them.
        logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            500,
            "internal_error",
            "Something went wrong on the appliance; nothing you sent was lost. "
            "If it happens again, tell a supervisor.",
        )
