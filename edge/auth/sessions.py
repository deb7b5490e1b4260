"""Sessions, supervisor elevation and the authenticator that hands them out."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edge.auth.credentials import HASHER, AuthConfig, Credentials
from edge.auth.limiter import FailureLimiter

logger = logging.getLogger(__name__)
_EVERYONE = "*"  # the elevation limiter's one key

Role = Literal["operator", "supervisor", "metrics"]
AuditFn = Callable[[str, str, dict[str, Any]], None]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def constant_time_equal(given: str, expected: str) -> bool:
    """Compare digests so neither content nor length leaks through timing."""
    return hmac.compare_digest(_digest(given), _digest(expected))


@dataclass
class Session:
    id: str  # a public handle for logs and audit; never the token
    client: str
    created_at: float
    expires_at: float
    elevated_until: float = 0.0
    _clock: Callable[[], float] = field(default=time.time, repr=False)

    @property
    def role(self) -> Role:
        return "supervisor" if self.elevated_until > self._clock() else "operator"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a session (operator or supervisor) or the metrics scraper."""

    role: Role
    session_id: str
    client: str
    session: Session | None = None

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.session_id}@{self.client}"


class AuthError(Exception):
    """A failed authentication step; ``retry_after`` is set while the client is locked out."""

    def __init__(self, code: str, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Authenticator:
    """Sign-in, elevation, session lookup, all audited through ``audit(actor, action, detail)``."""

    def __init__(
        self,
        settings: AuthConfig,
        credentials: Credentials,
        audit: AuditFn,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._creds = credentials
        self._audit_fn = audit
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self.limiter = FailureLimiter(
            max_failures=settings.max_failures,
            window_s=settings.failure_window_s,
            lockout_s=settings.lockout_s,
            lockout_max_s=settings.lockout_max_s,
            clock=clock,
        )
        # One key for every address: a global back-off on supervisor elevation.
        self.elevation_limiter = FailureLimiter(
            max_failures=settings.elevation_global_failures,
            window_s=settings.failure_window_s,
            lockout_s=settings.lockout_s,
            lockout_max_s=settings.lockout_max_s,
            clock=clock,
        )

    def _audit(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        try:
            self._audit_fn(actor, action, detail)
        except Exception:
            # A failing audit store must not turn a refusal (or a lockout) into a crash.
            logger.exception("Could not record audit entry %s for %s", action, actor)

    # -- attempts -----------------------------------------------------------------------
    def _refuse_if_locked(self, client: str, action: str) -> None:
        remaining = self.limiter.locked_for(client)
        if remaining > 0:
            self._audit(f"anonymous@{client}", f"{action}.refused_locked", {"client": client})
            raise AuthError(
                "locked_out",
                f"Too many failed attempts from this device. Try again in {int(remaining) + 1} s.",
                retry_after=remaining,
            )

    def _fail(self, client: str, actor: str, action: str, message: str) -> AuthError:
        self._audit(actor, f"{action}.failed", {"client": client})
        lockout = self.limiter.record_failure(client)
        if lockout > 0:
            logger.warning("Locking out %s for %.0f s after repeated failures", client, lockout)
            self._audit(actor, "auth.lockout", {"client": client, "seconds": lockout})
            return AuthError(
                "locked_out",
                f"Too many failed attempts. Try again in {int(lockout)} s.",
                retry_after=lockout,
            )
        return AuthError("invalid_credentials", message)

    def sign_in(self, secret: str, client: str) -> tuple[str, Session]:
        """Check the operator secret; return a new session token and its session."""
        self._refuse_if_locked(client, "auth.sign_in")
        if not constant_time_equal(secret, self._creds.operator_secret.get_secret_value()):
            raise self._fail(
                client, f"anonymous@{client}", "auth.sign_in", "The operator secret is wrong."
            )
        self.limiter.record_success(client)
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(
            id=secrets.token_hex(4),
            client=client,
            created_at=now,
            expires_at=now + self.settings.session_ttl_s,
            _clock=self._clock,
        )
        with self._lock:
            self._purge(now)
            self._sessions[_digest(token)] = session
            while len(self._sessions) > self.settings.max_sessions:
                self._sessions.popitem(last=False)
        self._audit(f"operator:{session.id}@{client}", "auth.sign_in", {"client": client})
        return token, session

    def elevate(self, session: Session, pin: str, client: str) -> Session:
        """Verify the supervisor PIN (argon2) and elevate the session for a short window."""
        self._refuse_if_locked(client, "auth.elevate")
        paused = self.elevation_limiter.locked_for(_EVERYONE)
        if paused > 0:
            self._audit(f"operator:{session.id}@{client}", "auth.elevate.refused_paused", {})
            raise AuthError(
                "locked_out",
                "Too many wrong PINs on this appliance. Supervisor sign-in pauses for "
                f"{int(paused) + 1} s.",
                retry_after=paused,
            )
        actor = f"operator:{session.id}@{client}"
        try:
            ok = HASHER.verify(pin, self._creds.supervisor_pin_hash.get_secret_value())
        except ValueError:  # a malformed hash must fail closed, not crash
            logger.error("The supervisor PIN hash could not be used for verification")
            ok = False
        if not ok:
            pause = self.elevation_limiter.record_failure(_EVERYONE)
            if pause > 0:
                logger.warning("Pausing supervisor elevation for %.0f s (wrong PINs)", pause)
                self._audit(actor, "auth.elevate.paused", {"seconds": pause})
            raise self._fail(client, actor, "auth.elevate", "The supervisor PIN is wrong.")
        self.limiter.record_success(client)
        with self._lock:
            session.elevated_until = min(
                session.expires_at, self._clock() + self.settings.elevation_ttl_s
            )
        self._audit(actor, "auth.elevate", {"client": client, "until": session.elevated_until})
        return session

    def drop_elevation(self, session: Session) -> None:
        with self._lock:
            session.elevated_until = 0.0

    def sign_out(self, token: str) -> Session | None:
        with self._lock:
            session = self._sessions.pop(_digest(token), None)
        if session is not None:
            self._audit(f"operator:{session.id}@{session.client}", "auth.sign_out", {})
        return session

    # -- lookups ------------------------------------------------------------------------
    def session_for(self, token: str) -> Session | None:
        now = self._clock()
        with self._lock:
            session = self._sessions.get(_digest(token))
            if session is None:
                return None
            if session.expires_at <= now:
                del self._sessions[_digest(token)]
                return None
            return session

    def is_metrics_token(self, token: str) -> bool:
        expected = self._creds.metrics_token
        if expected is None:
            return False
        return constant_time_equal(token, expected.get_secret_value())

    def _purge(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]
