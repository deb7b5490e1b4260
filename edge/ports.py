"""Narrow ports: what each worker needs from the appliance, and nothing more.

`Pipeline`, `Exporter`, `FolderWatcher`, retention and the sync wiring each take one of these
`Protocol`s instead of `Appliance`, so none of them imports `edge.app` (not even for typing) and
the composition root is the only module that knows all of them. `Appliance` satisfies every
port structurally; a test may hand in any smaller object that does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from edge.config import EdgeSettings
    from edge.db import runs
    from edge.db.store import Store
    from edge.detect.plate import PlateResult
    from edge.events import EventBus
    from edge.metrics import Metrics
    from edge.schemas import (
        ApplianceStatus,
        RunRequest,
        RuntimeSettings,
        RuntimeSettingsPatch,
        Ticket,
    )


class Host(Protocol):
    """The state every worker shares: settings, the store, the event bus and the metrics."""

    @property
    def settings(self) -> EdgeSettings: ...
    @property
    def store(self) -> Store: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def metrics(self) -> Metrics: ...


class ExportHost(Host, Protocol):
    """What `Exporter` writes CSVs with."""

    @property
    def share_dir(self) -> Path: ...
    def get_runtime_settings(self) -> RuntimeSettings: ...


class PipelineHost(Host, Protocol):
    """What `Pipeline` reads a plate and commits its run with."""

    @property
    def images_dir(self) -> Path: ...
    def check_disk(self) -> None: ...
    def disk_full_message(self) -> str: ...
    def read_frame(self, frame_image: np.ndarray | None, data: bytes) -> PlateResult: ...
    def commit_run(
        self,
        rec: runs.RunRecord,
        result: PlateResult,
        pending: dict[str, bytes] | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[str]: ...
    def flush_pending_images(self, run_id: str | None = None) -> int: ...


class RetentionHost(Host, Protocol):
    """What retention deletes old runs with."""

    @property
    def images_dir(self) -> Path: ...
    @property
    def floor_bytes(self) -> int: ...


class _Queue(Protocol):
    def full(self) -> bool: ...


class _HasQueue(Protocol):
    @property
    def queue(self) -> _Queue: ...


class IntakeHost(Protocol):
    """What `FolderWatcher` submits dropped images through."""

    @property
    def pipeline(self) -> _HasQueue: ...
    def submit_bytes(
        self,
        data: bytes,
        filename: str,
        req: RunRequest,
        *,
        source: str,
        on_done: Any | None = None,
    ) -> Ticket: ...


class SyncHost(Host, Protocol):
    """What the sync worker is wired from: status, run images and runtime settings."""

    def status(self) -> ApplianceStatus: ...
    def run_image(self, run_id: str, kind: Literal["raw", "annotated", "thumbnail"]) -> Path: ...
    def update_runtime_settings(
        self, patch: RuntimeSettingsPatch, actor: str
    ) -> RuntimeSettings: ...
