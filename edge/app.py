"""`Appliance`: the facade the HTTP API, the touchscreen UI and the CLI call (never SQL).

`start()` reads as a list: folders, store, migrations, crash clean-up, detector (warm-up),
capture source, pipeline worker, folder watcher, CSV retry and retention workers. `stop()`
joins them in reverse. See `/docs` of the brief `edge-facade.md` for the contract.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.calibration import CalibrationGrid
from edge import __version__, calibration, images, outbox, queries, repo, runtime
from edge.capture import CaptureSource, create_source
from edge.errors import (
    ApplianceError,
    CaptureUnavailable,
    DiskFull,
    InvalidInput,
    NotFound,
)
from edge.events import EventBus
from edge.exporter import Exporter
from edge.fsutil import clean_partials, disk_usage
from edge.metrics import Metrics
from edge.pipeline import Job, Pipeline, check_request, sha256_of
from edge.reading import PlateResult, model_info, read_plate
from edge.schemas import (
    ApplianceStatus,
    CalibrationOut,
    CameraStatus,
    DiskStatus,
    ModelStatus,
    Page,
    QueueStatus,
    Readiness,
    RunDetail,
    RunRequest,
    RunSummary,
    RuntimeSettings,
    RuntimeSettingsPatch,
    SampleDetail,
    SampleSummaryOut,
    SyncStatus,
    Ticket,
    TicketState,
)
from edge.settings import EdgeSettings, FolderCaptureSettings
from edge.store import Store
from edge.workers import Worker

logger = logging.getLogger(__name__)


class Appliance:
    def __init__(
        self,
        settings: EdgeSettings,
        *,
        detector: Any | None = None,
        source: CaptureSource | None = None,
    ) -> None:
        self.settings = settings
        self.events = EventBus()
        self.metrics = Metrics()
        self.store = Store(settings.resolved_db_path, settings.resolved_backup_dir)
        self.images_dir = settings.resolved_images_dir
        self.share_dir = settings.share_dir
        self.detector: Any | None = detector
        self._injected_detector = detector is not None
        self.detector_error = ""
        self.source = source or create_source(settings.capture)
        self.pipeline = Pipeline(self, settings.queue_size)
        self.exporter = Exporter(self)
        self.folder: Any | None = None
        self._workers: list[Worker] = []
        self._runtime: RuntimeSettings = runtime.defaults(settings)
        self._runtime_lock = threading.Lock()
        self._grid: CalibrationGrid | None = None
        self._preview: tuple[float, bytes] | None = None
        self._preview_lock = threading.Lock()
        self.started_at: datetime | None = None
        self._started = False
        self.metrics.bind(
            queue_depth=lambda: float(self.pipeline.queue.qsize()),
            backlog=lambda: outbox.backlog(self.store) if self._started else (0, None),
            disk_free=lambda: float(disk_usage(self.settings.data_dir)[0]),
            camera_up=lambda: 1.0 if self.source.state == "ok" else 0.0,
        )

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> Appliance:
        return cls(settings)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        for folder in (s.data_dir, self.images_dir, self.share_dir):
            folder.mkdir(parents=True, exist_ok=True)
        clean_partials(self.share_dir)
        clean_partials(self.images_dir)
        self.store.open()
        self.store.migrate()
        self._remove_orphan_images()
        self._runtime = runtime.load(self.store, s)
        self._grid = calibration.load(s.resolved_calibration_path)
        if self.detector is None:
            self.detector = self._load_detector()
        self.source.start()
        self.pipeline.start()
        self._started = True
        self.started_at = datetime.now(timezone.utc)
        self.exporter.export_dirty()
        if isinstance(s.capture, FolderCaptureSettings):
            from edge.folder import FolderWatcher

            self.folder = FolderWatcher(self, s.capture)
            self.folder.start()
        self._workers = [
            Worker("csv-retry", 30.0, self.exporter.export_dirty),
            Worker("retention", s.retention.interval_s, self.run_retention),
        ]
        for worker in self._workers:
            worker.start()
        logger.info("appliance started (db %s, share %s)", self.store.path, self.share_dir)

    def stop(self) -> None:
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
        self._started = False
        self.store.close()
        logger.info("appliance stopped")

    def __enter__(self) -> Appliance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _load_detector(self) -> Any:
        from pydantic import TypeAdapter

        from edge.detect.base import create_detector
        from edge.detect.settings import DetectorSettings

        det_settings = TypeAdapter(DetectorSettings).validate_python(self.settings.detector)
        return create_detector(det_settings)

    def _remove_orphan_images(self) -> None:
        """Image folders whose run never committed (a crash between images and commit)."""
        if not self.images_dir.is_dir():
            return
        known = {r[0] for r in self.store.read().execute("SELECT image_dir FROM runs").fetchall()}
        for child in self.images_dir.iterdir():
            if child.is_dir() and not child.name.startswith(".") and child.name not in known:
                logger.info("removing image folder %s of a run that never committed", child.name)
                images.remove_run_dir(child)

    # -- health ---------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        checks: dict[str, str] = {}
        try:
            self.store.read().execute("SELECT 1").fetchone()
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
        ready = all(v == "ok" for k, v in checks.items() if k != "capture")
        return Readiness(ready=ready, checks=checks)

    def status(self) -> ApplianceStatus:
        count, oldest = outbox.backlog(self.store)
        free, total = disk_usage(self.settings.data_dir)
        info = self.model_info
        return ApplianceStatus(
            version=__version__,
            mode=self.settings.mode,
            site_id=self.settings.site_id,
            device_id=self.settings.device_id,
            camera=CameraStatus(
                source=self.source.name,
                state=self.source.state,  # type: ignore[arg-type]
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
                backlog=count, oldest_age_s=oldest, rejected=outbox.rejected_count(self.store)
            ),
            disk=DiskStatus(
                path=str(self.settings.data_dir),
                free_bytes=free,
                total_bytes=total,
                floor_bytes=self.floor_bytes,
                ok=free >= self.floor_bytes,
            ),
            queue=QueueStatus(
                depth=self.pipeline.queue.qsize(),
                capacity=self.pipeline.capacity,
                running=self.pipeline.running,
            ),
            calibration_id=self._grid.grid_id if self._grid else None,
            started_at=self.started_at,
        )

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
            raise DiskFull(message=self.disk_full_message())

    # -- plates ---------------------------------------------------------------------------
    def _require_started(self) -> None:
        if not self._started:
            raise ApplianceError("not_started", "The appliance is starting; try again shortly.")

    def capture(self, req: RunRequest) -> Ticket:
        self._require_started()
        req = check_request(req)
        self.check_disk()
        frame = self.source.grab()
        return self.pipeline.submit(
            Job(
                ticket_id=str(uuid.uuid4()),
                req=req,
                data=frame.data,
                filename=frame.filename,
                source=frame.source,
                sha256=sha256_of(frame.data),
                captured_at=frame.captured_at,
                image=frame.image,
            )
        )

    def submit_image(self, data: bytes, filename: str, req: RunRequest) -> Ticket:
        self._require_started()
        req = check_request(req)
        if not data:
            raise InvalidInput(code="empty_image", message="The uploaded file is empty.")
        return self.submit_bytes(data, Path(filename or "upload").name, req, source="upload")

    def submit_bytes(
        self,
        data: bytes,
        filename: str,
        req: RunRequest,
        *,
        source: str,
        on_done: Any | None = None,
    ) -> Ticket:
        return self.pipeline.submit(
            Job(
                ticket_id=str(uuid.uuid4()),
                req=req,
                data=data,
                filename=filename,
                source=source,
                sha256=sha256_of(data),
                captured_at=datetime.now(timezone.utc),
                on_done=on_done,
            )
        )

    def wait(self, ticket_id: str, timeout: float) -> TicketState:
        ts = self.pipeline.wait(ticket_id, timeout)
        if ts is None:
            raise NotFound(message=f"There is no capture ticket {ticket_id}.")
        return ts

    def reread(self, run_id: str, actor: str) -> Ticket:
        self._require_started()
        detail = self.get_run(run_id)
        if detail.status == "deleted":
            raise InvalidInput(code="run_deleted", message="A deleted run cannot be re-read.")
        raw = self.run_image(run_id, "raw")
        req = RunRequest(
            sample_number=detail.sample_number,
            submission_number=detail.submission_number,
            description=detail.description,
            operator=actor or detail.operator,
        )
        data = raw.read_bytes()
        self.audit(actor, "run.reread", {"run_id": run_id})
        return self.pipeline.submit(
            Job(
                ticket_id=str(uuid.uuid4()),
                req=req,
                data=data,
                filename=detail.filename,
                source="reread",
                sha256=sha256_of(data),
                captured_at=detail.captured_at,
                plate_id=detail.plate_id,
                supersedes=run_id,
                force=True,
            )
        )

    def delete_run(self, run_id: str, actor: str, reason: str) -> None:
        self._require_started()
        from edge.messages import run_event

        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput(code="reason_required", message="Say why the run is deleted.")
        with self.store.write() as db:
            row = db.execute(
                "SELECT sample_number, deleted_at, edit FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
            if row is None:
                raise NotFound(message=f"There is no run {run_id}.")
            if row[1] is not None:
                return  # deleting twice is harmless
            payload = run_event(run_id, "deleted", edit=row[2] + 1, reason=reason)
            repo.mark_deleted(db, run_id, actor=actor, reason=reason[:500], payload=payload)
            self._recompute(db, row[0])
            repo.audit(
                db,
                actor=actor,
                action="run.delete",
                detail={"run_id": run_id, "reason": reason[:500]},
            )
        self.events.publish("run.deleted", {"run_id": run_id, "sample_number": row[0]})
        self.events.publish("sample.updated", {"sample_number": row[0]})
        self.exporter.export_quietly(row[0])

    def list_runs(
        self, *, sample_number: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[RunSummary]:
        return queries.list_runs(
            self.store.read(),
            sample_number=sample_number,
            limit=_bounded(limit),
            offset=max(0, offset),
        )

    def get_run(self, run_id: str) -> RunDetail:
        return queries.get_run(self.store.read(), run_id)

    def list_samples(
        self, *, query: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[SampleSummaryOut]:
        return queries.list_samples(
            self.store.read(), query=query, limit=_bounded(limit), offset=max(0, offset)
        )

    def get_sample(self, sample_number: str) -> SampleDetail:
        return queries.get_sample(self.store.read(), sample_number)

    def run_image(self, run_id: str, kind: Literal["raw", "annotated", "thumbnail"]) -> Path:
        if kind not in images.KINDS:
            raise InvalidInput(message=f"Unknown image kind {kind!r}: raw, annotated or thumbnail.")
        folder = self.images_dir / queries.image_dir(self.store.read(), run_id)
        path = images.find_image(folder, kind)
        if path is None:
            raise NotFound(message=f"The {kind} image of run {run_id} is no longer stored.")
        return path

    # -- pipeline hooks -------------------------------------------------------------------
    def decode(self, data: bytes) -> np.ndarray:
        from edge.detect.errors import ImageDecodeError
        from edge.detect.imageio import decode_image

        try:
            return decode_image(data)
        except ImageDecodeError as exc:
            raise InvalidInput(
                code="bad_image", message=f"The image cannot be read: {exc}"
            ) from exc

    def read_image(self, image: np.ndarray, params: RuntimeSettings) -> PlateResult:
        if self.detector is None:
            raise ApplianceError(
                "no_detector",
                f"The detector is not loaded: {self.detector_error or 'see the status page'}.",
            )
        return read_plate(self.detector, image, grid=self._grid, params=params)

    def commit_run(self, rec: repo.RunRecord, result: PlateResult) -> list[str]:
        from edge.messages import run_event, run_message

        with self.store.write() as db:
            olds = db.execute(
                "SELECT run_id, edit FROM runs WHERE plate_id = ? AND superseded_by IS NULL "
                "AND deleted_at IS NULL",
                [rec.plate_id],
            ).fetchall()
            events = {
                o[0]: run_event(
                    o[0], "superseded", edit=o[1] + 1, reason="re-read", superseded_by=rec.run_id
                )
                for o in olds
            }
            message = run_message(self.settings, rec, result)
            superseded = repo.insert_run(
                db,
                rec,
                wells=result.wells,
                rows=result.rows,
                distribution=result.distribution,
                statistics=result.statistics,
                message_json=message,
                superseded_events=events,
            )
            self._recompute(db, rec.sample_number)
        return superseded

    def _recompute(self, db: Any, sample_number: str) -> None:
        params = self.get_runtime_settings()
        n_cols = self._grid.plate_format.cols if self._grid else 12
        repo.recompute_sample(
            db, sample_number, n_cols=n_cols, protective_titre=params.protective_titre
        )

    def export_sample_quietly(self, sample_number: str) -> None:
        self.exporter.export_quietly(sample_number)

    def export_csv(self, sample_number: str) -> Path:
        return self.exporter.export(sample_number)

    def run_retention(self) -> None:
        from edge.retention import run_once

        run_once(self)

    # -- calibration ----------------------------------------------------------------------
    def get_calibration(self) -> CalibrationOut | None:
        return calibration.describe(self.store, self._grid)

    def set_calibration(self, grid: CalibrationGrid, actor: str) -> CalibrationOut:
        calibration.save(self.settings.resolved_calibration_path, grid)
        with self.store.write() as db:
            calibration.record(db, grid, actor)
            repo.audit(db, actor=actor, action="calibration.set", detail={"grid_id": grid.grid_id})
        self._grid = grid
        self.events.publish("calibration.updated", {"grid_id": grid.grid_id})
        out = self.get_calibration()
        assert out is not None
        return out

    def delete_calibration(self, actor: str) -> None:
        calibration.remove(self.settings.resolved_calibration_path)
        with self.store.write() as db:
            calibration.record(db, None, actor)
            repo.audit(db, actor=actor, action="calibration.delete", detail={})
        self._grid = None
        self.events.publish("calibration.updated", {"grid_id": None})

    def propose_calibration(self) -> CalibrationGrid:
        self._require_started()
        frame = self.source.grab()
        image = frame.image if frame.image is not None else self.decode(frame.data)
        return self.propose_from_image(image)

    def propose_from_image(self, image: np.ndarray) -> CalibrationGrid:
        if self.detector is None:
            raise ApplianceError("no_detector", "The detector is not loaded.")
        from edge.reading import detect

        detections, _ = detect(self.detector, image)
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
            repo.audit(db, actor=actor, action=action, detail=detail)


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), 500))


__all__ = ["Appliance", "CaptureUnavailable"]
