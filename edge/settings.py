"""Appliance settings (pydantic-settings, env prefix `MICROPLATE_EDGE_`, nested with `__`).

Unknown keys are rejected so a typo never silently falls back to a default. Sources, highest
first: constructor arguments, environment (`MICROPLATE_EDGE_SHARE_DIR=...`,
`MICROPLATE_EDGE_CAPTURE__TYPE=folder`), a `.env` file, a JSON config file named by
`MICROPLATE_EDGE_CONFIG_FILE`, secret files in `secrets_dir` (systemd credentials).

Settings a supervisor may change at runtime (template, dilution, thresholds, language) start
from the values here and are then overridden by what is stored in the database
(`edge.store`, table `runtime_settings`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from edge.sync.settings import SyncSettings

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
    # Validated by edge.detect's own settings (a discriminated union on `type`) when present.
    detector: dict[str, Any] = Field(default_factory=lambda: {"type": "onnx"})
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

    @field_validator("detector")
    @classmethod
    def _check_detector(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "type" not in value:
            raise ValueError("detector.type is required (onnx, tensorrt or fake)")
        return value

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
