"""Narrow ports: what each service needs from the others, and nothing more.

A service in `edge.services` takes the `Protocol`s below (or, where it needs one whole, a
sibling service), never the appliance: none of them imports `edge.app`, not even for typing, and
the composition root is the only module that knows all of them. `edge.sync` sees the database
only as the `OutboxPort`. A test may hand in any smaller object that fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import threading

    import numpy as np
    from sqlite_utils import Database

    from core.calibration import CalibrationGrid
    from core.rollout import ModelNotice, ModelReport
    from edge.config import EdgeSettings
    from edge.db import runs
    from edge.db.store import Store
    from edge.detect.plate import PlateResult
    from edge.events import EventBus
    from edge.metrics import Metrics
    from edge.schemas import RunRequest, RuntimeSettings, Ticket, TicketState

ImageKind = Literal["raw", "annotated", "thumbnail"]


class Host(Protocol):
    """The parts every service shares: settings, the store, the event bus and the metrics."""

    @property
    def settings(self) -> EdgeSettings: ...
    @property
    def store(self) -> Store: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def metrics(self) -> Metrics: ...


class Gate(Protocol):
    """Refuses work while the appliance is starting or stopping."""

    def require_started(self) -> None: ...


class DiskGuard(Protocol):
    """The free-space floor below which no plate is taken."""

    @property
    def floor_bytes(self) -> int: ...
    def check_disk(self) -> None: ...
    def disk_full_message(self) -> str: ...


class RuntimeSource(Protocol):
    """Today's runtime settings (CSV template, dilution, thresholds)."""

    def get(self) -> RuntimeSettings: ...


class GridSource(Protocol):
    """The calibration grid in force, if any."""

    @property
    def grid(self) -> CalibrationGrid | None: ...


class PlateReading(Protocol):
    """Reads one plate's pixels or bytes with the loaded detector."""

    def read_frame(self, frame_image: np.ndarray | None, data: bytes) -> PlateResult: ...
    def decode(self, data: bytes) -> np.ndarray: ...


class Detecting(Protocol):
    """The loaded detector itself (calibration proposals), and the full-size decode."""

    def require_detector(self) -> Any: ...
    def decode(self, data: bytes) -> np.ndarray: ...


class RunCommit(Protocol):
    """The run's one transaction, then its display images."""

    def commit_run(
        self,
        rec: runs.RunRecord,
        result: PlateResult,
        pending: dict[str, bytes] | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[str]: ...
    def flush_pending_images(self, run_id: str | None = None) -> int: ...


class _Queue(Protocol):
    def full(self) -> bool: ...


class Tickets(Protocol):
    """The pipeline as intake and the run service use it: a bounded queue of jobs."""

    @property
    def queue(self) -> _Queue: ...
    def submit(self, job: Any) -> Ticket: ...
    def knows(self, ticket_id: str) -> bool: ...
    def wait(self, ticket_id: str, timeout: float) -> TicketState | None: ...
    def refuse_busy(self) -> None: ...


class IntakePort(Protocol):
    """What `FolderWatcher` submits dropped images through."""

    @property
    def pipeline(self) -> Tickets: ...
    def submit_bytes(
        self,
        data: bytes,
        filename: str,
        req: RunRequest,
        *,
        source: str,
        on_done: Callable[[TicketState], None] | None = None,
    ) -> Ticket: ...


class OutboxHead(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def run_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def edit(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


class OutboxPort(Protocol):
    """The outbox as the sync worker drains it (`edge.db.outbox.Outbox`)."""

    @property
    def folder(self) -> Path: ...
    def heads(self, limit: int) -> Sequence[OutboxHead]: ...
    def payloads(self, ids: list[int]) -> dict[int, str]: ...
    def unsettled_for(self, run_id: str, edit: int) -> list[int]: ...
    def note_resent(self, ids: list[int], error: str) -> None: ...
    def mark_delivered(self, ids: list[int]) -> int: ...
    def mark_rejected(self, entry_id: int, reason: str) -> None: ...
    def backlog(self) -> tuple[int, float | None]: ...
    def backlog_if_open(self) -> tuple[int, float | None]: ...
    def rejected_count(self) -> int: ...


class SampleRecompute(Protocol):
    """Recomputes, inside the caller's transaction, the samples holding reads of some plates
    and stages their CSVs (`RunCommitter.recompute_plates`)."""

    def recompute_plates(
        self, db: Database, plate_ids: list[str], sample_number: str, staged: list[Any]
    ) -> set[str]: ...


class CsvPublisher(Protocol):
    """The share writer's lock and what publishes or drops CSVs staged in a transaction
    (`Exporter`)."""

    @property
    def lock(self) -> threading.Lock: ...
    def publish_all(self, staged: list[Any]) -> None: ...
    def discard(self, staged: list[Any]) -> None: ...


class ShadowPort(Protocol):
    """A candidate model shadowing the one in force (`edge.services.ota.OtaService`): the
    reading service hands it each plate it read, and a way to read the same frame again."""

    def shadow_read(
        self, read: Callable[[Any], PlateResult], current: PlateResult, current_ms: float
    ) -> None: ...


class ClassifierSlot(Protocol):
    """The well classifier in force, as the OTA service loads, compares and replaces it
    (`edge.services.reading.PlateReadingService`)."""

    def classifier_manifest(self) -> dict[str, Any] | None: ...
    def load_classifier(self, directory: Path) -> Any: ...
    def promote(self, classifier: Any) -> None: ...


class CloudError(Exception):
    """What a `ModelCloud` raises: `retry` when trying again later may help (network, 5xx),
    not for a refusal the cloud means (4xx)."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


class OfferFile(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def url(self) -> str: ...


class Offer(Protocol):
    @property
    def notice(self) -> ModelNotice: ...
    @property
    def manifest_url(self) -> str: ...
    @property
    def files(self) -> list[Any]: ...


class ModelCloud(Protocol):
    """The cloud's device model API as the OTA service uses it (`edge.sync.model_api.ModelApi`);
    it raises CloudError."""

    def offer(self) -> Offer: ...
    def download(self, url: str, dest: Path, *, limit: int) -> int: ...
    def report(self, report: ModelReport) -> None: ...
