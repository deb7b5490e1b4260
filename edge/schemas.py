"""Pydantic models the appliance's services (`edge.services`) return and accept.

The HTTP API serialises these as they are; keep them free of storage details.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

TicketStateName = Literal["queued", "running", "done", "failed"]
RunStatus = Literal["current", "superseded", "deleted"]
ImageKind = Literal["raw", "annotated", "thumbnail"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRequest(_Out):
    """What an operator types for a plate. `sample_number` is checked with
    `core.labware.safe_sample_number` by the appliance (a bad one raises `InvalidInput`)."""

    sample_number: str = Field(min_length=1, max_length=64)
    submission_number: str = Field(default="", max_length=64)
    description: str = Field(default="", max_length=500)
    operator: str = Field(default="", max_length=64)
    # The physical plate, when known (a barcode, or a deliberate re-capture of the plate of an
    # earlier run): a run with the plate_id of an earlier run supersedes it instead of adding
    # to the sample. Without it, a plate is identified by its image bytes.
    plate_id: UUID | None = None


class ErrorOut(_Out):
    code: str
    message: str


class Ticket(_Out):
    id: str
    state: TicketStateName
    created_at: datetime
    source: str = ""
    filename: str = ""
    sample_number: str = ""
    # Set when the image was already stored as a complete run (idempotent re-submission).
    run_id: str | None = None


class TicketState(_Out):
    ticket_id: str
    state: TicketStateName
    stage: str = ""
    run_id: str | None = None
    error: ErrorOut | None = None
    updated_at: datetime


class Readiness(_Out):
    ready: bool
    checks: dict[str, str]


class CameraStatus(_Out):
    source: str
    state: Literal["ok", "unavailable", "idle"]
    detail: str = ""


class ModelStatus(_Out):
    name: str = ""
    version: str = ""
    sha256: str = ""
    backend: str = ""
    loaded: bool = False
    detail: str = ""


class SyncStatus(_Out):
    backlog: int
    oldest_age_s: float | None
    rejected: int = 0
    configured: bool = False  # a broker is set in the settings
    connected: bool | None = None  # None when sync is not configured
    # edge.sync.reasons: a code ("ok", "identity_mismatch", ...) and the operator sentence.
    reason: str | None = None
    message: str | None = None


class DiskStatus(_Out):
    path: str
    free_bytes: int
    total_bytes: int
    floor_bytes: int
    ok: bool


class QueueStatus(_Out):
    depth: int
    capacity: int
    running: bool


class ApplianceStatus(_Out):
    version: str
    mode: str
    site_id: str
    device_id: str
    camera: CameraStatus
    model: ModelStatus
    sync: SyncStatus
    disk: DiskStatus
    queue: QueueStatus
    calibration_id: str | None = None
    started_at: datetime | None = None
    # The well classifier reading calibrated plates (None: the detector reads every plate).
    classifier: dict[str, str] | None = None
    # Model updates (edge.services.ota.OtaService.status): the model switched to, the one
    # shadowing, the last step reported.
    ota: dict[str, Any] | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class CsvState(_Out):
    sample_number: str
    pending: bool  # a change is committed but its CSV is not in the share yet
    file_name: str | None = None
    template: str | None = None
    written_at: datetime | None = None
    sha256: str | None = None


class WellOut(_Out):
    well_id: str
    row: int
    col: int
    state: str
    confidence: float | None = None
    class_name: str | None = None
    flags: list[str] = Field(default_factory=list)
    box: list[float] | None = None
    # After an operator's review: the model's own call (``state`` is then the final one).
    model_state: str | None = None


class RowOut(_Out):
    row: int
    label: str
    endpoint: int
    titre: float | None = None
    flags: list[str] = Field(default_factory=list)
    counted: bool
    counted_titre: float | None = None
    exclusion_reason: str | None = None
    # As both UIs show it (core.present.titre_text): "≥ 20480", "< 10".
    titre_text: str = ""


class RunSummary(_Out):
    run_id: str
    plate_id: str
    sample_number: str
    submission_number: str = ""
    description: str = ""
    operator: str = ""
    status: RunStatus
    source: str = ""
    filename: str = ""
    captured_at: datetime
    processed_at: datetime
    distribution: dict[str, int]
    rows_counted: int
    rows_excluded: int
    flagged_wells: int
    supersedes: str | None = None
    superseded_by: str | None = None
    image_sha256: str
    # The plate-quality gate: shown with a banner, counts no row, writes no CSV.
    needs_review: bool = False
    review_reasons: list[str] = Field(default_factory=list)
    reading: str | None = None


class RunDetail(RunSummary):
    wells: list[WellOut]
    rows: list[RowOut]
    statistics: dict[str, Any]
    images: dict[str, str]  # kind -> file name (serve through `Appliance.run_image`)
    csv: CsvState | None = None
    model: dict[str, str] = Field(default_factory=dict)
    calibration_id: str | None = None
    dilution: dict[str, Any] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    deleted_reason: str | None = None
    deleted_by: str | None = None
    # The run's edit counter (0: as read; each review, supersede or delete adds one) and its
    # latest operator review.
    edit: int = 0
    reviewed_at: datetime | None = None
    reviewed_by: str | None = None


class ReviewRequest(BaseModel):
    """An operator's review: corrected wells (id -> flowing, agglutinated or invalid) and
    whether a run held for review is accepted as read. The states are checked by the review
    service, which names the bad well."""

    model_config = ConfigDict(extra="forbid", strict=True)

    wells: dict[str, str] = Field(default_factory=dict, max_length=384)
    accept: bool = False
    # Who reviewed, as they typed it: the kiosk signs in with one shared operator secret, so the
    # session alone says only "an operator at this screen". Recorded in `reviewed_by` (and the
    # synced review's `by`) ahead of the session; checked by the review service.
    reviewer: str = Field(default="", max_length=64)


class ReviewQueueItem(RunSummary):
    """A run waiting for review: held by the plate gate, or with rows left unread."""

    unread_rows: int = 0


class SampleSummaryOut(_Out):
    sample_number: str
    plates: int  # plates that count (current reads)
    run_count: int  # every stored run of the sample, superseded and deleted included
    rows_total: int
    distribution: dict[str, int]
    statistics: dict[str, Any]
    updated_at: datetime
    csv: CsvState | None = None


class SampleDetail(SampleSummaryOut):
    runs: list[RunSummary]
    csv_files: list[CsvState] = Field(default_factory=list)


class CalibrationOut(_Out):
    grid_id: str
    columns: list[float]
    rows: list[float]
    image_width: int
    image_height: int
    updated_at: datetime
    updated_by: str
    reading: Literal["tilted", "untilted"] | None = None  # None: the runtime setting decides


class RuntimeSettings(_Out):
    csv_template: Literal["labware", "labware-legacy"]
    start_dilution: int = Field(ge=1, le=100000)
    dilution_factor: int = Field(ge=2, le=10)
    control_columns: list[int]
    min_confidence: float = Field(ge=0.0, le=1.0)
    protective_titre: int | None = Field(default=None, ge=1)
    language: Literal["en", "th"]
    reading: Literal["tilted", "untilted"] = "tilted"
    well_threshold: float = Field(default=0.5, ge=0.0, le=1.0)


class RuntimeSettingsPatch(_Out):
    """Only the fields given change; `protective_titre: null` clears it."""

    csv_template: Literal["labware", "labware-legacy"] | None = None
    start_dilution: int | None = Field(default=None, ge=1, le=100000)
    dilution_factor: int | None = Field(default=None, ge=2, le=10)
    control_columns: list[int] | None = None
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    protective_titre: int | None = Field(default=None, ge=1)
    language: Literal["en", "th"] | None = None
    reading: Literal["tilted", "untilted"] | None = None
    well_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class AuditEntry(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
