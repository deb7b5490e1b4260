"""Sync settings (the `sync` section of the appliance settings, env `MICROPLATE_EDGE_SYNC__...`).

Leaving the section out disables sync: the outbox then only accumulates. Secrets (the MQTT
password and the device API token) come from files (systemd credentials) in production; a
plain value is accepted for development and tests.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# Settings the cloud may change through the retained `config` topic. Anything else in a
# DesiredConfig is reported as not applied; the device's own settings stay authoritative.
DEFAULT_CONFIG_WHITELIST = ("min_confidence", "dilution", "protective_titre", "csv_template")


class SyncSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    broker_url: str = Field(
        default="mqtts://127.0.0.1:8883", description="mqtt://host:port or mqtts://host:port"
    )
    ca_cert_file: Path | None = None
    username: str = Field(default="", max_length=200)
    password: SecretStr | None = None
    password_file: Path | None = None
    client_id: str | None = Field(default=None, max_length=64)  # default: the MQTT username
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # How long the broker keeps our session (subscriptions, queued acks) while we are offline.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=60, le=2**32 - 1)
    window: int = Field(default=200, ge=1, le=10_000, description="runs awaiting the cloud's ack")
    ack_timeout_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    ack_timeout_max_s: float = Field(default=600.0, gt=0.0, le=86400.0)
    # Each wait is random in [min, min(max, min * 2**attempt)] (edge.sync.backoff): with a
    # 10 s cap a device is back within 10 s of the broker's return, and many spread out.
    reconnect_min_s: float = Field(default=1.0, gt=0.0, le=60.0)
    reconnect_max_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    status_interval_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    poll_s: float = Field(default=0.5, gt=0.0, le=60.0, description="outbox poll when idle")
    # Images out of band: presigned PUT from the cloud's device API.
    api_base_url: str | None = None
    device_token: SecretStr | None = None
    device_token_file: Path | None = None
    upload_images: tuple[str, ...] = ("annotated", "thumbnail")
    upload_retries: int = Field(default=4, ge=0, le=20)
    upload_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)
    # After this long without a successful upload a run is sent without its images.
    image_max_wait_s: float = Field(default=3600.0, ge=0.0)
    config_whitelist: tuple[str, ...] = DEFAULT_CONFIG_WHITELIST

    @field_validator("broker_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker_url must look like mqtts://host:8883 (or mqtt:// for tests)")
        if parts.username or parts.password:
            raise ValueError("broker_url must not carry credentials: use username/password_file")
        return value

    @field_validator("config_whitelist")
    @classmethod
    def _check_whitelist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(DEFAULT_CONFIG_WHITELIST))
        if unknown:
            raise ValueError(
                f"config_whitelist: {unknown} cannot be set remotely; "
                f"choose from {list(DEFAULT_CONFIG_WHITELIST)}"
            )
        return value

    @model_validator(mode="after")
    def _check_backoff(self) -> SyncSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        if self.ack_timeout_max_s < self.ack_timeout_s:
            raise ValueError("ack_timeout_max_s must be at least ack_timeout_s")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.broker_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker_url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker_url).scheme == "mqtts"

    def mqtt_password(self) -> str | None:
        return _secret(self.password, self.password_file, "sync.password_file")

    def api_token(self) -> str | None:
        return _secret(self.device_token, self.device_token_file, "sync.device_token_file")


def _secret(value: SecretStr | None, path: Path | None, name: str) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        # The path is fine to show; the content never is.
        raise ValueError(f"{name} {path} cannot be read: {exc.strerror}") from None
