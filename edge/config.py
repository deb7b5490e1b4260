"""Appliance settings (pydantic-settings, env prefix `MICROPLATE_EDGE_`, nested with `__`).

Unknown keys are rejected so a typo never silently falls back to a default. Sources, highest
first: constructor arguments, environment (`MICROPLATE_EDGE_SHARE_DIR=...`,
`MICROPLATE_EDGE_CAPTURE__TYPE=folder`), a `.env` file, a JSON config file named by
`MICROPLATE_EDGE_CONFIG_FILE`, secret files in `secrets_dir` (systemd credentials).

Settings a supervisor may change at runtime (template, dilution, thresholds, language) start
from the values here and are then overridden by what is stored in the database
(`edge.db.store`, table `runtime_settings`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from edge.detect.settings import DetectorSettings, OnnxDetectorSettings

CONFIG_FILE_ENV = "MICROPLATE_EDGE_CONFIG_FILE"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FakeCaptureSettings(_Strict):
    """Tests: serves `image` (a file) or a generated blank plate."""

    type: Literal["fake"] = "fake"
    image: Path | None = None
    fail: bool = False  # simulate a camera that has disappeared


class FilesCaptureSettings(_Strict):
    """Cycles through the given image files (the demo)."""

    type: Literal["files"] = "files"
    paths: list[Path] = Field(default_factory=list)
    glob: str = "*.jpg"


class FolderCaptureSettings(_Strict):
    """A plate reader drops image files into `inbox`; each becomes a run."""

    type: Literal["folder"] = "folder"
    inbox: Path
    processed: Path | None = None  # default inbox/processed
    failed: Path | None = None  # default inbox/failed
    patterns: list[str] = Field(default_factory=lambda: ["*.jpg", "*.jpeg", "*.png", "*.bmp"])
    stable_s: float = Field(default=0.5, ge=0.0, le=60.0)
    poll_s: float = Field(default=2.0, gt=0.0, le=60.0)


class OpenCVCaptureSettings(_Strict):
    """A V4L2 device index or a GStreamer pipeline string (Jetson CSI: nvarguscamerasrc)."""

    type: Literal["opencv"] = "opencv"
    device: int | str = 0
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    warmup_frames: int = Field(default=5, ge=0, le=100)


class Picamera2CaptureSettings(_Strict):
    type: Literal["picamera2"] = "picamera2"
    camera_num: int = 0
    width: int = Field(default=2028, gt=0)
    height: int = Field(default=1520, gt=0)


CaptureSettings = Annotated[
    FakeCaptureSettings
    | FilesCaptureSettings
    | FolderCaptureSettings
    | OpenCVCaptureSettings
    | Picamera2CaptureSettings,
    Field(discriminator="type"),
]


class AuthSettings(_Strict):
    """Read by `edge.auth` (edge API helper). Secrets come from files/credentials in production."""

    operator_secret: SecretStr | None = None
    operator_secret_file: Path | None = None
    supervisor_pin_hash: SecretStr | None = None  # argon2 hash (pwdlib), never a plain PIN
    metrics_token: SecretStr | None = None
    session_ttl_s: int = Field(default=12 * 3600, gt=0)
    supervisor_ttl_s: int = Field(default=300, gt=0)
    docs_enabled: bool | None = None  # None: on in development, off in production


class HttpSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_upload_mb: int = Field(default=40, ge=1, le=500)


class DilutionConfig(_Strict):
    start_dilution: int = Field(default=10, ge=1, le=100000)
    factor: int = Field(default=2, ge=2, le=10)
    control_columns: list[int] = Field(default_factory=list)


class RuntimeDefaults(_Strict):
    """Defaults for what a supervisor may change at runtime (see `edge.schemas.RuntimeSettings`)."""

    csv_template: Literal["labware", "labware-legacy"] = "labware"
    dilution: DilutionConfig = Field(default_factory=DilutionConfig)
    min_confidence: float = Field(default=0.25, ge=0.0, le=1.0)
    protective_titre: int | None = Field(default=None, ge=1)
    language: Literal["en", "th"] = "en"
    # How plates are read when the calibration does not say: tilted V-bottom (tear-drops) or
    # untilted U-bottom (buttons and mats); see core/README.md, "Reading modes".
    reading: Literal["tilted", "untilted"] = "tilted"
    # The well classifier's threshold: a crop whose best class probability is below it is
    # `unread` (min_confidence is the detector's, whose scores are on another scale).
    well_threshold: float = Field(default=0.5, ge=0.0, le=1.0)


class ShareSettings(_Strict):
    """How CSVs are named in `share_dir` (docs/edge.md, "The LabWare share")."""

    # per_sample: one current SAMPLE.csv, replaced atomically; per_save: a new file per change.
    naming: Literal["per_sample", "per_save"] = "per_sample"


class RetentionSettings(_Strict):
    max_age_days: int = Field(default=365, ge=1)
    disk_floor_mb: int = Field(default=500, ge=0)
    interval_s: float = Field(default=600.0, gt=0.0)
    chunk: int = Field(default=100, ge=1, le=10000)


# -- sync (docs/sync.md) --------------------------------------------------------------------
# Settings the cloud may change through the retained `config` topic. Anything else in a
# DesiredConfig is reported as not applied; the device's own settings stay authoritative.
# `upload_raw` adds or removes "raw" from `upload_images` (the site's "allow corrected plates
# for training"; the cloud refuses raw uploads of sites not opted in whatever the device says).
DEFAULT_CONFIG_WHITELIST = (
    "min_confidence",
    "dilution",
    "protective_titre",
    "csv_template",
    "upload_raw",
)


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


class OtaSettings(_Strict):
    """Model updates over the air (docs/ota.md, "On the appliance"); they need `sync` with
    `api_base_url` and a device token too."""

    enabled: bool = True
    # The cloud admin's ed25519 public key (base64, one line), written by Ansible
    # (microplate_edge_model_public_key). None or missing: updates are refused.
    public_key_file: Path | None = None
    max_download_mb: int = Field(default=512, ge=1, le=2048)
    download_timeout_s: float = Field(default=60.0, gt=0.0, le=3600.0)
    download_attempts: int = Field(default=3, ge=1, le=20)
    retry_max_s: float = Field(default=60.0, gt=0.0, le=3600.0)


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


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MICROPLATE_EDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        env_file=".env",
        env_file_encoding="utf-8",
    )

    mode: Literal["development", "production"] = "development"
    site_id: str = Field(default="site-1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    device_id: str = Field(default="edge-1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    data_dir: Path = Path("/var/lib/microplate")
    db_path: Path | None = None  # default data_dir/microplate.db
    images_dir: Path | None = None  # default data_dir/images
    backup_dir: Path | None = None  # default data_dir/backups
    share_dir: Path = Path("/srv/labware-share")
    share: ShareSettings = Field(default_factory=ShareSettings)
    calibration_path: Path | None = None  # default data_dir/calibration.json
    capture: CaptureSettings = Field(default_factory=FakeCaptureSettings)
    # edge.detect's own settings, a discriminated union on `type`: validated here, once.
    detector: DetectorSettings = Field(default_factory=OnnxDetectorSettings)
    runtime: RuntimeDefaults = Field(default_factory=RuntimeDefaults)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    queue_size: int = Field(default=8, ge=1, le=1000)
    preview_max_fps: float = Field(default=2.0, gt=0.0, le=30.0)
    preview_width: int = Field(default=640, ge=64, le=4096)
    thumbnail_width: int = Field(default=320, ge=32, le=2048)
    annotated_max_width: int = Field(default=1280, ge=256, le=8192)
    # Sync to the cloud over MQTT (docs/sync.md); absent: runs stay in the outbox.
    sync: SyncSettings | None = None
    # Signed model updates from the cloud (docs/ota.md).
    ota: OtaSettings = Field(default_factory=OtaSettings)

    @model_validator(mode="after")
    def _check_paths(self) -> EdgeSettings:
        share = _resolved(self.share_dir)
        for name, path in (
            ("db_path", self.resolved_db_path),
            ("data_dir", self.data_dir),
            ("images_dir", self.resolved_images_dir),
            ("backup_dir", self.resolved_backup_dir),
        ):
            p = _resolved(path)
            if p == share or share in p.parents:
                raise ValueError(
                    f"{name} ({path}) lies inside share_dir ({self.share_dir}): the database "
                    "and images must never sit on the LIMS share. Choose a local directory."
                )
        return self

    @property
    def resolved_db_path(self) -> Path:
        return self.db_path or self.data_dir / "microplate.db"

    @property
    def resolved_images_dir(self) -> Path:
        return self.images_dir or self.data_dir / "images"

    @property
    def resolved_backup_dir(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def resolved_calibration_path(self) -> Path:
        return self.calibration_path or self.data_dir / "calibration.json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            _JsonFileSource(settings_cls),
            file_secret_settings,
        )


class _JsonFileSource(PydanticBaseSettingsSource):
    """Reads the JSON file named by MICROPLATE_EDGE_CONFIG_FILE, if set."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"config file {path} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a JSON object")
        return data


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def describe_validation_error(exc: Exception) -> str:
    """One line per bad key, e.g. `capture.inbox: Field required`."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(settings)"
        lines.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "\n".join(lines)
