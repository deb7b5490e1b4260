"""Where the operator secret, supervisor PIN hash and metrics token come from.

Settings, a file, or a systemd credential (``$CREDENTIALS_DIRECTORY``); production refuses
missing or default ones, development generates them into private files. Only paths are
logged, never values.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr

from edge.errors import ConfigError

if TYPE_CHECKING:  # only for the annotation: keeps this module importable on its own
    from edge.config import EdgeSettings

logger = logging.getLogger(__name__)

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

HASHER = PasswordHash((Argon2Hasher(),))


class AuthConfigError(ConfigError, ValueError):
    """The authentication settings are unusable; the message says what to fix.

    A ``ConfigError`` so the CLI prints the message (no trace) and exits non-zero.
    """

    def __init__(self, message: str) -> None:
        super().__init__("auth_config", message)


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
    # Failed elevations from all addresses together, within `failure_window_s`, before every
    # elevation pauses (per-address counting alone let 50 addresses try 250 PINs in 2.4 s).
    elevation_global_failures: int = 20
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
    return HASHER.hash(pin)


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
