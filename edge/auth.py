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

import argparse
import getpass
import hashlib
import hmac
import logging
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr

if TYPE_CHECKING:  # only for the annotation: keeps this module importable on its own
    from edge.settings import EdgeSettings

logger = logging.getLogger(__name__)

Role = Literal["operator", "supervisor", "metrics"]
AuditFn = Callable[[str, str, dict], None]

# Names of the credential files (settings *_file, systemd credentials, generated dev files).
OPERATOR_SECRET_NAME = "operator-secret"  # noqa: S105 (a file name)
SUPERVISOR_HASH_NAME = "supervisor-pin-hash"
SUPERVISOR_PIN_NAME = "supervisor-pin"  # development only: the plain PIN, for the developer
METRICS_TOKEN_NAME = "metrics-token"  # noqa: S105 (a file name)

MIN_OPERATOR_SECRET_LEN = 16
# Values that show up in examples and quick starts; production refuses them outright.
KNOWN_DEFAULT_SECRETS = frozenset(
    {"changeme", "change-me", "operator", "secret", "password", "microplate", "admin", "kiosk"}
)

_HASHER = PasswordHash((Argon2Hasher(),))


class AuthConfigError(ValueError):
    """The authentication settings are unusable; the message says what to fix."""


@dataclass(frozen=True)
class AuthConfig:
    """What edge.auth needs, taken from ``EdgeSettings`` (section ``auth``, plus mode/data_dir).

    The lockout numbers are policy rather than site configuration, so they are fields with
    safe defaults here instead of settings a typo could weaken.
    """

    production: bool
    operator_secret: SecretStr | None = None
    operator_secret_file: Path | None = None
    supervisor_pin_hash: SecretStr | None = None
    metrics_token: SecretStr | None = None
    credentials_dir: Path | None = None  # development: generated credentials live here
    session_ttl_s: float = 12 * 3600
    elevation_ttl_s: float = 300
    max_sessions: int = 64
    max_failures: int = 5
    failure_window_s: float = 300
    lockout_s: float = 60
    lockout_max_s: float = 3600
    cookie_secure: bool = False
    docs_enabled: bool = True

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> AuthConfig:
        auth = settings.auth
        production = settings.mode == "production"
        docs = auth.docs_enabled if auth.docs_enabled is not None else not production
        return cls(
            production=production,
            operator_secret=auth.operator_secret,
            operator_secret_file=auth.operator_secret_file,
            supervisor_pin_hash=auth.supervisor_pin_hash,
            metrics_token=auth.metrics_token,
            credentials_dir=settings.data_dir / "credentials",
            session_ttl_s=auth.session_ttl_s,
            elevation_ttl_s=auth.supervisor_ttl_s,
            docs_enabled=docs,
        )


@dataclass(frozen=True)
class Credentials:
    """The resolved secrets. Holds SecretStr so an accidental repr shows nothing."""

    operator_secret: SecretStr
    supervisor_pin_hash: SecretStr
    metrics_token: SecretStr | None
    generated_in: Path | None = None


def hash_pin(pin: str) -> str:
    """argon2id hash of a supervisor PIN or password, for the settings."""
    return _HASHER.hash(pin)


def _read_secret_file(path: Path, what: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AuthConfigError(f"Cannot read the {what} file {path}: {exc.strerror}.") from exc
    if not text:
        raise AuthConfigError(f"The {what} file {path} is empty.")
    return SecretStr(text)


def _resolve(
    value: SecretStr | None, path: Path | None, name: str, what: str, fallback_dir: Path | None
) -> SecretStr | None:
    """Explicit value, then the *_file setting, then a systemd credential, then fallback_dir."""
    if value is not None and value.get_secret_value():
        return value
    if path is not None:
        return _read_secret_file(path, what)
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / name).is_file():
        return _read_secret_file(Path(cred_dir) / name, what)
    if fallback_dir is not None and (fallback_dir / name).is_file():
        return _read_secret_file(fallback_dir / name, what)
    return None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")


def generate_dev_credentials(directory: Path) -> None:
    """Write fresh operator secret, supervisor PIN (+hash) and metrics token into directory."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (directory / OPERATOR_SECRET_NAME).exists():
        _write_private(directory / OPERATOR_SECRET_NAME, secrets.token_urlsafe(24))
    if not (directory / SUPERVISOR_HASH_NAME).exists():
        pin = f"{secrets.randbelow(10**6):06d}"
        _write_private(directory / SUPERVISOR_PIN_NAME, pin)
        _write_private(directory / SUPERVISOR_HASH_NAME, hash_pin(pin))
    if not (directory / METRICS_TOKEN_NAME).exists():
        _write_private(directory / METRICS_TOKEN_NAME, secrets.token_urlsafe(24))


def load_credentials(settings: AuthConfig) -> Credentials:
    """Resolve the secrets; production refuses missing or default ones, development makes them."""
    dev_dir = settings.credentials_dir
    production = settings.production

    def resolve_all() -> tuple[SecretStr | None, SecretStr | None, SecretStr | None]:
        fallback = None if production else dev_dir
        return (
            _resolve(
                settings.operator_secret,
                settings.operator_secret_file,
                OPERATOR_SECRET_NAME,
                "operator secret",
                fallback,
            ),
            _resolve(
                settings.supervisor_pin_hash,
                None,
                SUPERVISOR_HASH_NAME,
                "supervisor PIN hash",
                fallback,
            ),
            _resolve(
                settings.metrics_token,
                None,
                METRICS_TOKEN_NAME,
                "metrics token",
                fallback,
            ),
        )

    operator, pin_hash, metrics = resolve_all()
    generated_in: Path | None = None
    if (operator is None or pin_hash is None) and not production:
        if dev_dir is None:
            raise AuthConfigError(
                "No operator secret or supervisor PIN hash is configured and no credentials "
                "directory is set to generate development ones in "
                "(data_dir/credentials)."
            )
        generate_dev_credentials(dev_dir)
        # Only the location is logged; the secrets stay in their 0600 files.
        logger.warning("Development credentials written to %s", dev_dir)
        generated_in = dev_dir
        operator, pin_hash, metrics = resolve_all()
    if operator is None:
        raise AuthConfigError(
            "Production mode needs an operator secret: set "
            "MICROPLATE_EDGE_AUTH__OPERATOR_SECRET_FILE or provide "
            f"the systemd credential '{OPERATOR_SECRET_NAME}'."
        )
    if pin_hash is None:
        raise AuthConfigError(
            "Production mode needs a supervisor PIN hash: run `python -m edge.auth hash` and set "
            "MICROPLATE_EDGE_AUTH__SUPERVISOR_PIN_HASH (or the systemd credential "
            f"'{SUPERVISOR_HASH_NAME}')."
        )
    if not pin_hash.get_secret_value().startswith("$argon2"):
        raise AuthConfigError(
            "The supervisor PIN hash is not an argon2 hash: store the output of "
            "`python -m edge.auth hash`, never the PIN itself."
        )
    if production:
        value = operator.get_secret_value()
        if len(value) < MIN_OPERATOR_SECRET_LEN or value.lower() in KNOWN_DEFAULT_SECRETS:
            raise AuthConfigError(
                "The operator secret is a default or shorter than "
                f"{MIN_OPERATOR_SECRET_LEN} characters: generate a random one."
            )
    return Credentials(operator, pin_hash, metrics, generated_in)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def constant_time_equal(given: str, expected: str) -> bool:
    """Compare digests so neither content nor length leaks through timing."""
    return hmac.compare_digest(_digest(given), _digest(expected))


class FailureLimiter:
    """Counts failed attempts per key (client address); locks the key out, exponentially.

    ``max_failures`` failures within ``window_s`` lock the key for ``lockout_s``; each further
    lockout doubles, up to ``lockout_max_s``. A success clears the key.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        window_s: float,
        lockout_s: float,
        lockout_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._lockout_max_s = lockout_max_s
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}

    def locked_for(self, key: str) -> float:
        """Seconds the key is still locked out (0 when it may try)."""
        with self._lock:
            until = self._locked_until.get(key, 0.0)
            return max(0.0, until - self._clock())

    def record_failure(self, key: str) -> float:
        """Count a failure; return the lockout it started in seconds (0 when none)."""
        with self._lock:
            now = self._clock()
            attempts = self._failures.setdefault(key, deque())
            self._failures.move_to_end(key)
            attempts.append(now)
            while attempts and attempts[0] < now - self._window_s:
                attempts.popleft()
            self._evict()
            if len(attempts) < self._max_failures:
                return 0.0
            attempts.clear()
            strikes = self._strikes.get(key, 0) + 1
            self._strikes[key] = strikes
            duration = min(self._lockout_max_s, self._lockout_s * 2 ** (strikes - 1))
            self._locked_until[key] = now + duration
            return float(duration)

    def record_success(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._locked_until.pop(key, None)
            self._strikes.pop(key, None)

    def _evict(self) -> None:
        # Bound memory against a flood of addresses: forget the least recently failing keys,
        # but never one that is locked out right now.
        now = self._clock()
        while len(self._failures) > self._max_keys:
            key, _ = self._failures.popitem(last=False)
            if self._locked_until.get(key, 0.0) <= now:
                self._locked_until.pop(key, None)
                self._strikes.pop(key, None)


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

    def _audit(self, actor: str, action: str, detail: dict) -> None:
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
        actor = f"operator:{session.id}@{client}"
        try:
            ok = _HASHER.verify(pin, self._creds.supervisor_pin_hash.get_secret_value())
        except ValueError:  # a malformed hash must fail closed, not crash
            logger.error("The supervisor PIN hash could not be used for verification")
            ok = False
        if not ok:
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


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.auth hash`: print the argon2 hash of a PIN typed twice (never echoed)."""
    parser = argparse.ArgumentParser(prog="python -m edge.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="hash a supervisor PIN or password for the settings")
    parser.parse_args(argv)
    pin = getpass.getpass("Supervisor PIN or password: ")
    if len(pin) < 4:
        print("Too short: use at least 4 characters.", file=sys.stderr)
        return 2
    if getpass.getpass("Again: ") != pin:
        print("The two entries differ; nothing was written.", file=sys.stderr)
        return 2
    print(hash_pin(pin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
