"""Authentication for the appliance API: operator sessions, supervisor elevation, lockout.

Who signs in: the kiosk (and anyone on the bench with the device-local operator secret) gets an
operator session. Destructive or configuration-changing actions need the session to be
*elevated* with the supervisor PIN or password for a short window. Prometheus may use a
separate metrics token that opens only ``/metrics`` and ``/ready``.

Why this shape:
- Sessions are random tokens held server-side (only their SHA-256 is stored), so signing out
  or a restart really ends them; no signing key to leak.
- Every secret comparison is constant-time (``hmac.compare_digest`` over digests; argon2 for
  the PIN), and a bad attempt costs the caller a lockout, not just a retry.
- Secrets come from settings, a file, or a systemd credential (``$CREDENTIALS_DIRECTORY``),
  and never appear in a log line: only the paths they were read from do.
"""

from __future__ import annotations

from edge.auth.credentials import (
    KNOWN_DEFAULT_SECRETS,
    METRICS_TOKEN_NAME,
    MIN_OPERATOR_SECRET_LEN,
    OPERATOR_SECRET_NAME,
    SUPERVISOR_HASH_NAME,
    SUPERVISOR_PIN_NAME,
    AuthConfig,
    AuthConfigError,
    Credentials,
    generate_dev_credentials,
    hash_pin,
    load_credentials,
)
from edge.auth.limiter import FailureLimiter
from edge.auth.sessions import (
    AuditFn,
    Authenticator,
    AuthError,
    Principal,
    Role,
    Session,
    constant_time_equal,
)

__all__ = [
    "KNOWN_DEFAULT_SECRETS",
    "METRICS_TOKEN_NAME",
    "MIN_OPERATOR_SECRET_LEN",
    "OPERATOR_SECRET_NAME",
    "SUPERVISOR_HASH_NAME",
    "SUPERVISOR_PIN_NAME",
    "AuditFn",
    "AuthConfig",
    "AuthConfigError",
    "AuthError",
    "Authenticator",
    "Credentials",
    "FailureLimiter",
    "Principal",
    "Role",
    "Session",
    "constant_time_equal",
    "generate_dev_credentials",
    "hash_pin",
    "load_credentials",
]
