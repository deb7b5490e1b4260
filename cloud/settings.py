"""Cloud settings: environment variables with the `MICROPLATE_CLOUD_` prefix, secrets from files.

Unknown keys are rejected so a typo fails at start instead of silently keeping a default.
Outside development every secret must be set to something that is not a shipped default.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that only ever make sense on a developer's laptop; production refuses all of them.
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"  # noqa: S105
DEV_S3_SECRET = "dev-only-s3-secret"  # noqa: S105
ENV_PREFIX = "MICROPLATE_CLOUD_"
_WEAK_SECRETS = {"", "changeme", "change-me", "secret", "password", "admin", DEV_JWT_SECRET}


class SettingsError(ValueError):
    """The environment names a setting that does not exist."""


class CloudSettings(BaseSettings):
    """Every knob of the cloud service; see docs/cloud.md for the list with explanations."""

    model_config = SettingsConfigDict(
        env_prefix="MICROPLATE_CLOUD_",
        extra="forbid",
        env_file=None,
        validate_default=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/microplate"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_wait_seconds: float = Field(default=30.0, ge=0)

    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_issuer: str = "microplate-cloud"
    jwt_audience: str = "microplate-api"
    access_token_minutes: int = Field(default=15, ge=1, le=15)
    refresh_token_hours: int = Field(default=24, ge=1, le=24 * 30)
    refresh_absolute_days: int = Field(default=14, ge=1, le=90)
    reset_token_minutes: int = Field(default=30, ge=5, le=24 * 60)

    login_max_failures: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    login_rate_per_minute: int = Field(default=20, ge=1)
    # Password-reset requests per client address per hour (and at most 3 live tokens an account).
    reset_rate_per_hour: int = Field(default=10, ge=1)
    # Reverse proxies (addresses or CIDR blocks) whose X-Forwarded-For is believed; nobody's by
    # default, so a client cannot pick its own address to dodge the sign-in limits.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Bearer token for Prometheus on /metrics; unset, /metrics answers nobody.
    metrics_token: SecretStr | None = None

    first_admin_email: str | None = None
    first_admin_password: SecretStr | None = None

    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "microplate"
    presign_seconds: int = Field(default=120, ge=10, le=3600)

    mqtt_broker_url: str = "mqtts://127.0.0.1:8883"
    mqtt_password_file: Path | None = None
    mqtt_acl_file: Path | None = None
    # The device listener's dynamic-security plugin file (`plugin_opt_config_file`).
    mqtt_dynsec_file: Path | None = None
    mosquitto_pid_file: Path | None = None
    # The ingest worker's own broker account; it reads every device subtree and writes acks.
    mqtt_ingest_username: str = "microplate-ingest"
    mqtt_ingest_password: SecretStr | None = None
    ca_cert_file: Path | None = None
    api_base_url: str = "http://127.0.0.1:8000"
    # How long an enrollment bundle may wait before `microplate-edge enroll` refuses it.
    enrollment_ttl_hours: int = Field(default=7 * 24, ge=1, le=24 * 365)

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "microplate@localhost"
    smtp_starttls: bool = True
    dev_mail_sink: Path = Path("dev-mail.log")

    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {net!r} is not an address or CIDR block"
                ) from None
        return value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> CloudSettings:
        if self.environment != "production":
            return self
        problems: list[str] = []
        jwt = self.jwt_secret.get_secret_value()
        if jwt in _WEAK_SECRETS or len(jwt) < 32:
            problems.append("jwt_secret must be set to a random value of at least 32 characters")
        if self.s3_secret_key is None or self.s3_secret_key.get_secret_value() in (
            _WEAK_SECRETS | {DEV_S3_SECRET}
        ):
            problems.append("s3_secret_key must be set (not a default)")
        if self.first_admin_password is not None:
            pw = self.first_admin_password.get_secret_value()
            if pw in _WEAK_SECRETS or len(pw) < 12:
                problems.append("first_admin_password must have at least 12 characters")
        if self.mqtt_ingest_password is not None and (
            self.mqtt_ingest_password.get_secret_value() in _WEAK_SECRETS
        ):
            problems.append("mqtt_ingest_password must not be a default")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self


def load_settings(**overrides: Any) -> CloudSettings:
    """Read settings from the environment, plus secret files.

    Secret files come from systemd credentials (`$CREDENTIALS_DIRECTORY`) or a folder named by
    `MICROPLATE_CLOUD_SECRETS_DIR`; a file named like the field (e.g. `jwt_secret`) wins over
    the default but not over an environment variable.
    """
    unknown = sorted(
        key
        for key in os.environ
        if key.upper().startswith(ENV_PREFIX)
        and key.upper()[len(ENV_PREFIX) :].lower() not in CloudSettings.model_fields
        and key.upper() != f"{ENV_PREFIX}SECRETS_DIR"
    )
    if unknown:
        # pydantic-settings ignores unknown variables; a typo must not silently keep a default.
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
    secrets_dir = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR") or os.environ.get(
        "CREDENTIALS_DIRECTORY"
    )
    values: dict[str, Any] = {}
    if secrets_dir:
        values.update(_read_secret_files(Path(secrets_dir)))
    values.update(overrides)
    return CloudSettings(**values)


def _read_secret_files(folder: Path) -> dict[str, str]:
    """Fields named by files in `folder`, unless the environment sets them (env wins)."""
    found: dict[str, str] = {}
    for name in CloudSettings.model_fields:
        path = folder / name
        if f"{ENV_PREFIX}{name.upper()}" in os.environ or not path.is_file():
            continue
        found[name] = path.read_text(encoding="utf-8").strip()
    return found
