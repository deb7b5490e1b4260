"""`Appliance`: the composition root. It builds the parts and the services, wires each service
with the narrow ports it needs (`edge.ports`), starts and stops them, and holds no behaviour.

The HTTP API, the touchscreen UI and the CLI call the services it exposes: `intake` (capture,
upload, tickets, preview), `runs` (runs, samples, images, CSVs, delete, re-read), `calibration`,
`review` (an operator's corrections and "accept as read", the review queue), `runtime` (the
supervisor's runtime settings), `health` (readiness, status), `reading` (the
detector in force) and `audit`; and `events`, `metrics` and `store` themselves.

`start()` reads as a list: folders, store, migrations, crash clean-up, detector (warm-up),
capture source, pipeline worker, folder watcher, CSV retry and retention workers, sync. `stop()`
joins them in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.capture import CaptureSource, create_source
from edge.config import EdgeSettings, FolderCaptureSettings
from edge.db import outbox, runs
from edge.db.store import Store
from edge.events import EventBus
from edge.files import images
from edge.files.fsutil import clean_partials
from edge.files.spool import Spool
from edge.metrics import Metrics
from edge.services import retention
from edge.services.audit import AuditLog
from edge.services.calibration import CalibrationService
from edge.services.commit import RunCommitter
from edge.services.exporter import Exporter
from edge.services.health import DiskGuard, Health, Lifecycle
from edge.services.intake import FolderWatcher, Intake
from edge.services.ota import OtaService, OtaState
from edge.services.pipeline import Pipeline
from edge.services.reading import PlateReadingService
from edge.services.review import ReviewService
from edge.services.runs import RunService
from edge.services.runtime import RuntimeSettingsService
from edge.workers import Worker

if TYPE_CHECKING:
    from edge.sync import SyncWorker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    """What every service shares (`edge.ports.Host`)."""

    settings: EdgeSettings
    store: Store
    events: EventBus
    metrics: Metrics


class Appliance:
    """See the module docstring. `detector`, `source` and `wells` may be handed in (tests,
    tools); otherwise they are created from the settings."""

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
        parts = self._parts = Parts(settings, self.store, self.events, self.metrics)
        source = source or create_source(settings.capture)
        self._workers: list[Worker] = []
        self._folder: FolderWatcher | None = None
        self.sync: SyncWorker | None = None
        lifecycle = Lifecycle()
        disk = DiskGuard(settings, on_full=self._wake_retention)

        self.runtime = RuntimeSettingsService(settings, self.store)
        self.audit = AuditLog(self.store)
        ota_state = OtaState(settings.data_dir / "ota")
        # the reader and the calibration need each other: it reads with the grid in force,
        # proposals are read with its detector
        self.reading = PlateReadingService(
            settings,
            self.runtime,
            lambda: self.calibration.grid,
            detector=detector,
            wells=wells,
            wells_dir=ota_state.active_dir(),
        )
        self.calibration = CalibrationService(parts, lifecycle, self.reading, source)
        # model updates: download, verify, shadow, switch (edge.services.ota)
        self.ota = OtaService(
            settings.ota,
            ota_state,
            self.reading,
            plate_format=self._plate_format,
            disk_floor=lambda: disk.floor_bytes,
            events=self.events,
        )
        exporter = Exporter(parts, self.runtime)
        committer = self._committer = RunCommitter(parts, exporter, self.runtime, self.calibration)
        pipeline = Pipeline(
            parts, settings.queue_size, disk=disk, reading=self.reading, commit=committer
        )
        self.health = Health(
            parts,
            lifecycle,
            disk,
            self.reading,
            self.calibration,
            source,
            pipeline,
            sync=lambda: self.sync,
            ota=self.ota.status,
        )
        spool = Spool(settings.data_dir / "spool")
        self.intake = Intake(settings, lifecycle, disk, pipeline, spool, source)
        self.runs = RunService(parts, lifecycle, pipeline, committer, exporter)
        self.review = ReviewService(parts, lifecycle, self.runtime, committer, exporter)
        self.metrics.bind(
            queue_depth=lambda: float(pipeline.depth),
            backlog=lambda: outbox.backlog(self.store) if lifecycle.started else (0, None),
            disk_free=lambda: float(disk.free_bytes()[0]),
            camera_up=lambda: 1.0 if source.state == "ok" else 0.0,
            disk_floor=lambda: float(disk.floor_bytes),
        )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        share_dir, images_dir = s.share_dir, s.resolved_images_dir
        intake, runs_service = self.intake, self.runs
        for folder in (s.data_dir, images_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if s.mode == "development":
            share_dir.mkdir(parents=True, exist_ok=True)
        elif not share_dir.is_dir():
            # In production the share is a mount: creating it would hide the CSVs from the LIMS.
            logger.error("the LabWare share %s is missing; CSVs wait until it is back", share_dir)
        clean_partials(share_dir)
        clean_partials(images_dir)
        # Only here, before any capture can be in flight: a partial spool file seen later may
        # be a capture that is still being written.
        clean_partials(intake.spool.folder)
        self._open_offline()
        self._remove_orphan_images()
        self._committer.flush_pending_images()  # display images a crash left unwritten
        try:
            self.reading.load()
        except BaseException:
            self.store.close()  # nothing half-started stays behind
            raise
        # Imported before anything starts taking plates (the MQTT and HTTP clients take a while
        # to load), started last; neither is loaded when sync is not configured.
        build_sync = build_api = None
        if s.sync is not None and s.sync.enabled:
            from edge.sync import build_model_api, build_sync_worker

            build_sync, build_api = build_sync_worker, build_model_api
        self.reading.shadow = self.ota
        intake.source.start()
        intake.pipeline.start()
        self.health.lifecycle.mark_started(True)
        runs_service.exporter.export_dirty()
        intake.replay_spool()
        if isinstance(s.capture, FolderCaptureSettings):
            self._folder = FolderWatcher(intake, s.capture)
            self._folder.start()
        self._workers = [
            Worker("csv-retry", 30.0, runs_service.exporter.export_dirty),
            Worker("spool-retry", 5.0, intake.replay_spool),
            Worker(
                "retention",
                s.retention.interval_s,
                lambda: retention.run_once(self._parts, self.health.disk.floor_bytes),
            ),
        ]
        for worker in self._workers:
            worker.start()
        if build_sync is not None:
            self.sync = build_sync(
                s,
                outbox.Outbox(self.store),
                events=self.events,
                status=self.health.status,
                run_image=runs_service.run_image,
                update_runtime=self.runtime.update,
                on_model=self.ota.notice,
            )
        self.ota.start(build_api(s) if build_api is not None else None)
        if self.sync is not None:
            self.sync.start()
        logger.info("appliance started (db %s, share %s)", self.store.path, share_dir)

    @contextmanager
    def offline(self) -> Iterator[Appliance]:
        """Store, migrations, runtime settings and calibration only, closed on leaving: for CLI
        maintenance commands that must not start the camera, the detector or any worker."""
        self._open_offline()
        try:
            yield self
        finally:
            self.store.close()

    def _open_offline(self) -> None:
        self.store.open()
        self.store.migrate()
        self.runtime.load()
        self.calibration.load()

    def stop(self) -> None:
        if self.sync is not None:  # started last, stopped first
            self.sync.stop()
            self.sync = None
        self.ota.stop()
        for worker in reversed(self._workers):
            worker.stop()
        self._workers = []
        if self._folder is not None:
            self._folder.stop()
            self._folder = None
        self.intake.pipeline.stop()
        self.intake.source.stop()
        self.reading.close()
        self.health.lifecycle.mark_started(False)
        self.store.close()
        logger.info("appliance stopped")

    def __enter__(self) -> Appliance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _plate_format(self) -> int:
        grid = self.calibration.grid
        return grid.plate_format.n_wells if grid is not None else 96

    def _wake_retention(self) -> None:
        for worker in self._workers:
            if worker.name == "retention":
                worker.wake()

    def _remove_orphan_images(self) -> None:
        """Image folders whose run never committed (a crash between images and commit)."""
        images_dir = self.settings.resolved_images_dir
        if not images_dir.is_dir():
            return
        known = runs.image_dirs(self.store.read())
        for child in images_dir.iterdir():
            if child.is_dir() and not child.name.startswith(".") and child.name not in known:
                logger.info("removing image folder %s of a run that never committed", child.name)
                images.remove_run_dir(child)
