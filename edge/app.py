"""`Appliance`: the facade the HTTP API, the touchscreen UI and the CLI call (never SQL).

`start()` reads as a list: folders, store, migrations, crash clean-up, detector (warm-up),
capture source, pipeline worker, folder watcher, CSV retry and retention workers. `stop()`
joins them in reverse. Its contract for callers is in docs/edge.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from core.calibration import CalibrationGrid
from edge import __version__, calibration, runtime
from edge.capture import CaptureSource, create_source
from edge.config import EdgeSettings, FolderCaptureSettings
from edge.db import admin, outbox, runs
from edge.db.store import Store
from edge.detect.plate import model_info
from edge.errors import (
    CaptureUnavailable,
    DiskFull,
    NotReady,
)
from edge.events import EventBus
from edge.exporter import Exporter
from edge.files import images
from edge.files.fsutil import clean_partials, disk_usage
from edge.files.spool import Spool
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.plates import PlateOps
from edge.schemas import (
    ApplianceStatus,
    CalibrationOut,
    CameraStatus,
    DiskStatus,
    ModelStatus,
    QueueStatus,
    Readiness,
    RuntimeSettings,
    RuntimeSettingsPatch,
    SyncStatus,
)
from edge.workers import Worker

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge.ports import SyncHost
    from edge.sync import SyncWorker

logger = logging.getLogger(__name__)


class Appliance(PlateOps):
    """See the module docstring; plate operations live in `edge.plates.PlateOps`."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        detector: Any | None = None,
        source: CaptureSource | None = None,
        wells: Any | None = None,
    ) -> None:
        self.settings = settings
        self.events = EventBus()
        self.metrics = Metrics()
        self.store = Store(settings.resolved_db_path, settings.resolved_backup_dir)
        self.images_dir = settings.resolved_images_dir
        self.share_dir = settings.share_dir
        self.detector: Any | None = detector
        self.wells: Any | None = wells  # WellClassifier: reads calibrated plates crop by crop
        self._own_wells = False  # loaded here (closed at stop), not handed in
        self._injected_detector = detector is not None
        self.detector_error = ""
        self.source = source or create_source(settings.capture)
        self.pipeline = Pipeline(self, settings.queue_size)
        self.spool = Spool(settings.data_dir / "spool")
        self._spool_lock = threading.Lock()
        self.exporter = Exporter(self)
        self.folder: Any | None = None
        self._workers: list[Worker] = []
        self.sync: SyncWorker | None = None
        self._runtime: RuntimeSettings = runtime.defaults(settings)
        self._runtime_lock = threading.Lock()
        self._grid: CalibrationGrid | None = None
        self._preview: tuple[float, bytes] | None = None
        self._preview_lock = threading.Lock()
        self.started_at: datetime | None = None
        self._started = False
        self.metrics.bind(
            queue_depth=lambda: float(self.pipeline.depth),
            backlog=lambda: outbox.backlog(self.store) if self._started else (0, None),
            disk_free=lambda: float(disk_usage(self.settings.data_dir)[0]),
            camera_up=lambda: 1.0 if self.source.state == "ok" else 0.0,
            disk_floor=lambda: float(self.floor_bytes),
        )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        for folder in (s.data_dir, self.images_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if s.mode == "development":
            self.share_dir.mkdir(parents=True, exist_ok=True)
        elif not self.share_dir.is_dir():
            # In production the share is a mount: creating it would hide the CSVs from the LIMS.
            logger.error(
                "the LabWare share %s is missing; CSVs wait until it is back", self.share_dir
            )
        clean_partials(self.share_dir)
        clean_partials(self.images_dir)
        # Only here, before any capture can be in flight: a partial spool file seen later may
        # be a capture that is still being written.
        clean_partials(self.spool.folder)
        self.open_offline()
        self._remove_orphan_images()
        self.flush_pending_images()  # display images a crash left committed but unwritten
        if self.detector is None:
            try:
                self.load_detector()
            except BaseException as exc:
                self.detector_error = str(exc)
                self.store.close()  # nothing half-started stays behind
                raise
        # Imported before anything starts taking plates (the MQTT and HTTP clients take a while
        # to load), started last; neither is loaded when sync is not configured.
        build_sync: Callable[[SyncHost], SyncWorker | None] | None = None
        if s.sync is not None and s.sync.enabled:
            from edge.sync import build_sync_worker

            build_sync = build_sync_worker
        self.source.start()
        self.pipeline.start()
        self._started = True
        self.started_at = datetime.now(timezone.utc)
        self.exporter.export_dirty()
        self.replay_spool()
        if isinstance(s.capture, FolderCaptureSettings):
            from edge.folder import FolderWatcher

            self.folder = FolderWatcher(self, s.capture)
            self.folder.start()
        self._workers = [
            Worker("csv-retry", 30.0, self.exporter.export_dirty),
            Worker("spool-retry", 5.0, self.replay_spool),
            Worker("retention", s.retention.interval_s, self.run_retention),
        ]
        for worker in self._workers:
            worker.start()
        if build_sync is not None:
            self.sync = build_sync(self)
        if self.sync is not None:
            self.sync.start()
        logger.info("appliance started (db %s, share %s)", self.store.path, self.share_dir)

    def open_offline(self) -> None:
        """Store, migrations, runtime settings and calibration only: for CLI maintenance
        commands that must not start the camera, the detector or any worker."""
        self.store.open()
        self.store.migrate()
        self._runtime = runtime.load(self.store, self.settings)
        self._grid = calibration.load(self.settings.resolved_calibration_path)

    def close_offline(self) -> None:
        self.store.close()

    def stop(self) -> None:
        if self.sync is not None:  # started last, stopped first
            self.sync.stop()
            self.sync = None
        for worker in reversed(self._workers):
            worker.stop()
        self._workers = []
        if self.folder is not None:
            self.folder.stop()
            self.folder = None
        self.pipeline.stop()
        self.source.stop()
        if self.detector is not None and not self._injected_detector:
            close = getattr(self.detector, "close", None)
            if callable(close):
                close()
            self.detector = None
        if self.wells is not None and self._own_wells:
            self.wells.close()
            self.wells = None
            self._own_wells = False
        self._started = False
        self.store.close()
        logger.info("appliance stopped")

    def __enter__(self) -> Appliance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def load_detector(self) -> None:
        self.detector = self._create_detector()
        if self.wells is None:
            from edge.detect.classifier import create_classifier

            try:
                self.wells = create_classifier(self.settings.detector)
            except BaseException:
                self.detector.close()
                self.detector = None
                raise
            self._own_wells = self.wells is not None

    def _create_detector(self) -> Any:
        from edge.detect.base import create_detector

        return create_detector(self.settings.detector)

    def _remove_orphan_images(self) -> None:
        """Image folders whose run never committed (a crash between images and commit)."""
        if not self.images_dir.is_dir():
            return
        known = runs.image_dirs(self.store.read())
        for child in self.images_dir.iterdir():
            if child.is_dir() and not child.name.startswith(".") and child.name not in known:
                logger.info("removing image folder %s of a run that never committed", child.name)
                images.remove_run_dir(child)

    # -- health ---------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        checks: dict[str, str] = {}
        try:
            self.store.ping()
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
            checks["database"] = f"error: {exc}"
        checks["detector"] = (
            "ok" if self.detector is not None else (self.detector_error or "not loaded")
        )
        checks["pipeline"] = "ok" if self._started else "not started"
        checks["capture"] = "ok" if self.source.state in ("ok", "idle") else self.source.detail
        free, _ = disk_usage(self.settings.data_dir)
        checks["disk"] = "ok" if free >= self.floor_bytes else self.disk_full_message()
        share_ok = self.share_dir.is_dir() and os.access(self.share_dir, os.W_OK)
        checks["share"] = (
            "ok" if share_ok else f"the LabWare share {self.share_dir} is not writable"
        )
        ready = all(v == "ok" for k, v in checks.items() if k != "capture")
        return Readiness(ready=ready, checks=checks)

    def status(self) -> ApplianceStatus:
        count, oldest = outbox.backlog(self.store)
        free, total = disk_usage(self.settings.data_dir)
        info = self.model_info
        sync_reason = self.sync.reason_log.current if self.sync is not None else None
        return ApplianceStatus(
            version=__version__,
            mode=self.settings.mode,
            site_id=self.settings.site_id,
            device_id=self.settings.device_id,
            camera=CameraStatus(
                source=self.source.name,
                state=self.source.state,
                detail=self.source.detail,
            ),
            model=ModelStatus(
                name=info.get("name", ""),
                version=info.get("version", ""),
                sha256=info.get("sha256", ""),
                backend=info.get("backend", ""),
                loaded=self.detector is not None,
                detail=self.detector_error,
            ),
            sync=SyncStatus(
                backlog=count,
                oldest_age_s=oldest,
                rejected=outbox.rejected_count(self.store),
                configured=self.sync is not None,
                connected=self.sync.link.connected if self.sync is not None else None,
                reason=sync_reason.code if sync_reason else None,
                message=sync_reason.message if sync_reason else None,
            ),
            disk=DiskStatus(
                path=str(self.settings.data_dir),
                free_bytes=free,
                total_bytes=total,
                floor_bytes=self.floor_bytes,
                ok=free >= self.floor_bytes,
            ),
            queue=QueueStatus(
                depth=self.pipeline.depth,
                capacity=self.pipeline.capacity,
                running=self.pipeline.running,
            ),
            calibration_id=self._grid.grid_id if self._grid else None,
            started_at=self.started_at,
            classifier=self.classifier_info,
        )

    @property
    def classifier_info(self) -> dict[str, str] | None:
        wells = self.wells
        if wells is None:
            return None
        return {
            "name": wells.model.name,
            "version": wells.model.version,
            "backend": wells.backend,
            "precision": wells.precision,
        }

    @property
    def model_info(self) -> dict[str, str]:
        return model_info(self.detector) if self.detector is not None else {}

    # -- disk -----------------------------------------------------------------------------
    @property
    def floor_bytes(self) -> int:
        return self.settings.retention.disk_floor_mb * 1024 * 1024

    def disk_full_message(self) -> str:
        free, _ = disk_usage(self.settings.data_dir)
        return (
            f"The disk is full: free space is {free // (1024 * 1024)} MB, below the "
            f"{self.settings.retention.disk_floor_mb} MB floor. Ask a supervisor to free space; "
            "nothing was lost."
        )

    def check_disk(self) -> None:
        free, _ = disk_usage(self.settings.data_dir)
        if free < self.floor_bytes:
            for worker in self._workers:
                if worker.name == "retention":
                    worker.wake()  # free acknowledged runs now rather than at the next round
            raise DiskFull(message=self.disk_full_message())

    def _require_started(self) -> None:
        if not self._started:
            raise NotReady(message="The appliance is starting or stopping; try again shortly.")

    # -- calibration ----------------------------------------------------------------------
    def get_calibration(self) -> CalibrationOut | None:
        return calibration.describe(self.store, self._grid)

    def set_calibration(self, grid: CalibrationGrid, actor: str) -> CalibrationOut:
        calibration.save(self.settings.resolved_calibration_path, grid)
        with self.store.write() as db:
            calibration.record(db, grid, actor)
            admin.audit(db, actor=actor, action="calibration.set", detail={"grid_id": grid.grid_id})
        self._grid = grid
        self.events.publish("calibration.updated", {"grid_id": grid.grid_id})
        out = self.get_calibration()
        assert out is not None
        return out

    def delete_calibration(self, actor: str) -> None:
        calibration.remove(self.settings.resolved_calibration_path)
        with self.store.write() as db:
            calibration.record(db, None, actor)
            admin.audit(db, actor=actor, action="calibration.delete", detail={})
        self._grid = None
        self.events.publish("calibration.updated", {"grid_id": None})

    def propose_calibration(self) -> CalibrationGrid:
        self._require_started()
        frame = self.source.grab()
        image = frame.image if frame.image is not None else self.decode(frame.data)
        return self.propose_from_image(image)

    def propose_from_image(self, image: np.ndarray) -> CalibrationGrid:
        from edge.detect.plate import detect

        detections, _ = detect(self._detector(), image)
        return calibration.propose(detections, image.shape[1], image.shape[0])

    # -- preview --------------------------------------------------------------------------
    def preview_jpeg(self) -> bytes | None:
        """Throttled to `preview_max_fps`; while a plate is processed the last frame is reused
        so the preview never takes CPU from inference."""
        min_gap = 1.0 / self.settings.preview_max_fps
        with self._preview_lock:
            cached = self._preview
            now = time.monotonic()
            if cached and (now - cached[0] < min_gap or self.pipeline.running):
                return cached[1]
            frame = self.source.preview_frame()
            if frame is None:
                return cached[1] if cached else None
            data = images.encode_jpeg(images.thumbnail(frame, self.settings.preview_width), 75)
            self._preview = (now, data)
            return data

    # -- runtime settings and audit -------------------------------------------------------
    def get_runtime_settings(self) -> RuntimeSettings:
        with self._runtime_lock:
            return self._runtime

    def update_runtime_settings(self, patch: RuntimeSettingsPatch, actor: str) -> RuntimeSettings:
        with self._runtime_lock:
            new = runtime.apply(self._runtime, patch)
            runtime.save(self.store, new, patch, actor)
            self._runtime = new
        return new

    def audit(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        with self.store.write() as db:
            admin.audit(db, actor=actor, action=action, detail=detail)


__all__ = ["Appliance", "CaptureUnavailable"]
