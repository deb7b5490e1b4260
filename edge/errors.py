"""Errors the appliance raises towards its callers (HTTP API, UI, CLI).

Every error carries a stable machine `code` and a `message` written for an operator: what went
wrong and what to do. The HTTP layer maps each class to a status code via `http_status`; nothing
here ever reaches a user as a stack trace.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class: an error a user or the environment caused, with an operator message."""

    http_status = 500
    default_code = "appliance_error"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        self.code = code or self.default_code
        self.message = message or "The appliance could not do that."
        super().__init__(self.message)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class Busy(ApplianceError):
    """The inference queue is full: try again shortly (HTTP 503 + Retry-After)."""

    http_status = 503
    default_code = "busy"

    def __init__(self, code: str | None = None, message: str = "", retry_after_s: int = 5) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class DiskFull(ApplianceError):
    """Free disk space is below the floor: capture is refused, nothing stored is touched."""

    http_status = 507
    default_code = "disk_full"


class NotFound(ApplianceError):
    http_status = 404
    default_code = "not_found"


class InvalidInput(ApplianceError):
    http_status = 422
    default_code = "invalid_input"


class CaptureUnavailable(ApplianceError):
    """The camera (or other capture source) cannot deliver a frame right now."""

    http_status = 503
    default_code = "capture_unavailable"


class SupervisorRequired(ApplianceError):
    """Allowed to a supervisor only in this case (e.g. reviewing a run older than a day)."""

    http_status = 403
    default_code = "supervisor_required"


class Conflict(ApplianceError):
    http_status = 409
    default_code = "conflict"


class NotReady(ApplianceError):
    """The appliance is starting or stopping (HTTP 503)."""

    http_status = 503
    default_code = "not_ready"


class ConfigError(ApplianceError):
    """The settings are invalid; the message names the bad key."""

    default_code = "config_error"
