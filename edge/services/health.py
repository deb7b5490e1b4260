"""Is the appliance able to take plates: started (`Lifecycle`), the disk above its floor
(`DiskGuard`), readiness, and the status page's one summary of camera, model, sync, disk and
queue (`Health`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.db import outbox
from edge.errors import DiskFull, NotReady
from edge.files.fsutil import disk_usage
from edge.schemas import (
    ApplianceStatus,
    CameraStatus,
    DiskStatus,
    ModelStatus,
    QueueStatus,
    Readiness,
    SyncStatus,
)

if TYPE_CHECKING:
    from edge.capture import CaptureSource
    from edge.config import EdgeSettings
    from edge.ports import GridSource, Host
    from edge.services.pipeline import Pipeline
    from edge.services.reading import PlateReadingService
    from edge.sync import SyncWorker


class Lifecycle:
    """Whether the appliance is started: services refuse work while it is not (`Gate`)."""

    def __init__(self) -> None:
        self.started_at: datetime | None = None

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def mark_started(self, started: bool) -> None:
        self.started_at = datetime.now(timezone.utc) if started else None

    def require_started(self) -> None:
        if not self.started:
            raise NotReady(message="The appliance is starting or stopping; try again shortly.")


class DiskGuard:
    """The free-space floor of the data disk. `on_full` is called when a plate is refused for
    space (the appliance wakes retention to free acknowledged runs now)."""

    def __init__(self, settings: EdgeSettings, on_full: Callable[[], None]) -> None:
        self._settings = settings
        self._on_full = on_full

    @property
    def floor_bytes(self) -> int:
        return self._settings.retention.disk_floor_mb * 1024 * 1024

    def free_bytes(self) -> tuple[int, int]:
        """(free, total) bytes of the data disk."""
        return disk_usage(self._settings.data_dir)

    def disk_full_message(self) -> str:
        free, _ = self.free_bytes()
        return (
            f"The disk is full: free space is {free // (1024 * 1024)} MB, below the "
            f"{self._settings.retention.disk_floor_mb} MB floor. Ask a supervisor to free space; "
            "nothing was lost."
        )

    def check_disk(self) -> None:
        free, _ = self.free_bytes()
        if free < self.floor_bytes:
            self._on_full()
            raise DiskFull(message=self.disk_full_message())


class Health:
    """Readiness and status; `sync` returns the running sync worker, if any."""

    def __init__(
        self,
        host: Host,
        lifecycle: Lifecycle,
        disk: DiskGuard,
        reading: PlateReadingService,
        calibration: GridSource,
        source: CaptureSource,
        pipeline: Pipeline,
        *,
        sync: Callable[[], SyncWorker | None],
        ota: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._host = host
        self.lifecycle = lifecycle
        self.disk = disk
        self._reading = reading
        self._calibration = calibration
        self._source = source
        self._pipeline = pipeline
        self._sync = sync
        self._ota = ota

    @property
    def started(self) -> bool:
        return self.lifecycle.started

    # -- reports --------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        settings = self._host.settings
        checks: dict[str, str] = {}
        try:
            self._host.store.ping()
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
            checks["database"] = f"error: {exc}"
        checks["detector"] = (
            "ok" if self._reading.detector is not None else (self._reading.error or "not loaded")
        )
        checks["pipeline"] = "ok" if self.started else "not started"
        checks["capture"] = "ok" if self._source.state in ("ok", "idle") else self._source.detail
        free, _ = self.disk.free_bytes()
        floor = self.disk.floor_bytes
        checks["disk"] = "ok" if free >= floor else self.disk.disk_full_message()
        share = settings.share_dir
        share_ok = share.is_dir() and os.access(share, os.W_OK)
        checks["share"] = "ok" if share_ok else f"the LabWare share {share} is not writable"
        ready = all(v == "ok" for k, v in checks.items() if k != "capture")
        return Readiness(ready=ready, checks=checks)

    def status(self) -> ApplianceStatus:
        settings, store = self._host.settings, self._host.store
        count, oldest = outbox.backlog(store)
        free, total = self.disk.free_bytes()
        floor = self.disk.floor_bytes
        info = self._reading.model_info()
        sync = self._sync()
        sync_reason = sync.reason_log.current if sync is not None else None
        grid = self._calibration.grid
        return ApplianceStatus(
            version=__version__,
            mode=settings.mode,
            site_id=settings.site_id,
            device_id=settings.device_id,
            camera=CameraStatus(
                source=self._source.name,
                state=self._source.state,
                detail=self._source.detail,
            ),
            model=ModelStatus(
                name=info.get("name", ""),
                version=info.get("version", ""),
                sha256=info.get("sha256", ""),
                backend=info.get("backend", ""),
                loaded=self._reading.detector is not None,
                detail=self._reading.error,
            ),
            sync=SyncStatus(
                backlog=count,
                oldest_age_s=oldest,
                rejected=outbox.rejected_count(store),
                configured=sync is not None,
                connected=sync.link.connected if sync is not None else None,
                reason=sync_reason.code if sync_reason else None,
                message=sync_reason.message if sync_reason else None,
            ),
            disk=DiskStatus(
                path=str(settings.data_dir),
                free_bytes=free,
                total_bytes=total,
                floor_bytes=floor,
                ok=free >= floor,
            ),
            queue=QueueStatus(
                depth=self._pipeline.depth,
                capacity=self._pipeline.capacity,
                running=self._pipeline.running,
            ),
            calibration_id=grid.grid_id if grid else None,
            started_at=self.lifecycle.started_at,
            classifier=self._reading.classifier_info(),
            ota=self._ota() if self._ota is not None else None,
        )
