"""Plate operations of the `Appliance` facade: capture, upload, wait, re-read, delete, lists,
images, and the hooks the pipeline calls (read a frame, commit a run, export a CSV).

A mixin only to keep `edge.app` readable; it uses the appliance's store, pipeline, exporter,
source, detector, settings and calibration.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge import pending_images
from edge.db import admin, queries, runs, samples
from edge.detect.plate import PlateResult, make_reader, read_plate
from edge.detect.plate import decode as decode_frame
from edge.errors import ApplianceError, DiskFull, InvalidInput, NotFound
from edge.files import images
from edge.pipeline import Job, check_request, is_disk_full, sha256_of
from edge.schemas import (
    Page,
    RunDetail,
    RunRequest,
    RunSummary,
    SampleDetail,
    SampleSummaryOut,
    Ticket,
    TicketState,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.calibration import CalibrationGrid
    from core.pooling import SampleSummary
    from edge.capture import CaptureSource
    from edge.config import EdgeSettings
    from edge.db.store import Store
    from edge.events import EventBus
    from edge.exporter import Exporter
    from edge.files.spool import Spool
    from edge.metrics import Metrics
    from edge.pipeline import Pipeline
    from edge.schemas import RuntimeSettings

logger = logging.getLogger(__name__)


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), 500))


class PlateOps:
    settings: EdgeSettings
    store: Store
    events: EventBus
    metrics: Metrics
    pipeline: Pipeline
    exporter: Exporter
    source: CaptureSource
    detector: Any | None
    wells: Any | None  # the WellClassifier, when one is loaded
    detector_error: str
    images_dir: Path
    spool: Spool
    _spool_lock: threading.Lock
    _grid: CalibrationGrid | None

    if TYPE_CHECKING:  # provided by Appliance

        @property
        def floor_bytes(self) -> int: ...
        def _require_started(self) -> None: ...
        def check_disk(self) -> None: ...
        def disk_full_message(self) -> str: ...
        def get_runtime_settings(self) -> RuntimeSettings: ...
        def audit(self, actor: str, action: str, detail: dict[str, Any]) -> None: ...

    # -- plates ---------------------------------------------------------------------------
    def capture(self, req: RunRequest) -> Ticket:
        self._require_started()
        req = check_request(req)
        self.check_disk()
        frame = self.source.grab()
        return self._submit_spooled(
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
        return self._submit_spooled(
            Job(
                ticket_id=str(uuid.uuid4()),
                req=req,
                data=data,
                filename=Path(filename or "upload").name,
                source="upload",
                sha256=sha256_of(data),
                captured_at=datetime.now(timezone.utc),
            )
        )

    def _submit_spooled(self, job: Job) -> Ticket:
        """Queue a plate that exists only in memory, after putting it in the spool."""
        if self.pipeline.queue.full():
            self.pipeline.refuse_busy()  # before writing anything
        self.check_disk()
        spool = self.spool
        job.on_done = lambda ts, tid=job.ticket_id: spool.remove(tid)
        # The lock keeps the spool-retry worker from replaying an entry between put and submit.
        with self._spool_lock:
            try:
                spool.put(
                    job.ticket_id,
                    job.data,
                    req=job.req,
                    filename=job.filename,
                    source=job.source,
                    captured_at=job.captured_at,
                )
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull(message=self.disk_full_message()) from exc
                raise
            try:
                return self.pipeline.submit(job)
            except ApplianceError:
                spool.remove(job.ticket_id)
                raise

    def replay_spool(self) -> int:
        """Queue again what a previous process had accepted but not finished."""
        with self._spool_lock:
            return self._replay_spool()

    def _unspool(self, ticket_id: str) -> Callable[[TicketState], None]:
        def remove(ts: TicketState) -> None:
            self.spool.remove(ticket_id)

        return remove

    def _replay_spool(self) -> int:
        queued = 0
        for entry in self.spool.entries():
            if self.pipeline.knows(entry.ticket_id):
                continue
            data = entry.data
            job = Job(
                ticket_id=entry.ticket_id,
                req=entry.req,
                data=data,
                filename=entry.filename,
                source=entry.source,
                sha256=sha256_of(data),
                captured_at=entry.captured_at,
                on_done=self._unspool(entry.ticket_id),
            )
            try:
                self.pipeline.submit(job)
            except ApplianceError as exc:
                logger.info("spooled plate %s waits: %s", entry.ticket_id, exc.message)
                break
            queued += 1
        if queued:
            logger.info("re-queued %d plate(s) accepted before a restart", queued)
        return queued

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
        with self.exporter.lock:
            staged: list[Any] = []
            try:
                with self.store.write() as db:
                    row = runs.deletion_target(db, run_id)
                    if row is None:
                        raise NotFound(message=f"There is no run {run_id}.")
                    if row[1] is not None:
                        return  # deleting twice is harmless
                    payload = run_event(run_id, "deleted", edit=row[2] + 1, reason=reason)
                    runs.mark_deleted(db, run_id, actor=actor, reason=reason[:500], payload=payload)
                    recomputed = self._recompute_plates(db, [row[3]], row[0], staged)
                    admin.audit(
                        db,
                        actor=actor,
                        action="run.delete",
                        detail={"run_id": run_id, "reason": reason[:500]},
                    )
            except BaseException:
                self.exporter.discard(staged)
                raise
            self.exporter.publish_all(staged)
        self.events.publish("run.deleted", {"run_id": run_id, "sample_number": row[0]})
        for sample in recomputed:
            self.events.publish("sample.updated", {"sample_number": sample})

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
        if path is None and kind != "raw":
            # Committed but not yet written by the background writer: write it now.
            self.flush_pending_images(run_id)
            path = images.find_image(folder, kind)
        if path is None:
            raise NotFound(message=f"The {kind} image of run {run_id} is no longer stored.")
        return path

    # -- pipeline hooks -------------------------------------------------------------------
    def decode(self, data: bytes) -> np.ndarray:
        """Full-size decode (calibration proposals); InvalidInput for a bad file."""
        from edge.detect.errors import ImageDecodeError
        from edge.detect.imageio import decode_image

        try:
            return decode_image(data)
        except ImageDecodeError as exc:
            raise InvalidInput(
                code="bad_image", message=f"The image cannot be read: {exc}"
            ) from exc

    def _detector(self) -> Any:
        if self.detector is None:
            raise ApplianceError(
                "no_detector",
                f"The detector is not loaded: {self.detector_error or 'see the status page'}.",
            )
        return self.detector

    def read_frame(self, frame_image: np.ndarray | None, data: bytes) -> PlateResult:
        """Decode (unless the camera gave pixels) and read one plate with today's settings."""
        detector = self._detector()
        params = self.get_runtime_settings()
        reader = make_reader(detector, grid=self._grid, params=params, wells=self.wells)
        if frame_image is not None:
            return read_plate(detector, frame_image, grid=self._grid, params=params, reader=reader)
        image, factor, full, decode_ms = decode_frame(
            detector, data, reader, min_width=self.settings.annotated_max_width
        )
        return read_plate(
            detector,
            image,
            grid=self._grid,
            params=params,
            reduced_by=factor,
            full_size=full,
            decode_ms=decode_ms,
            reader=reader,
        )

    def commit_run(
        self,
        rec: runs.RunRecord,
        result: PlateResult,
        pending: dict[str, bytes] | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[str]:
        """The run's one transaction. `pending` (file name -> bytes: the display images) is
        committed with it and written into the run's folder afterwards
        (`flush_pending_images`), so a committed run never lacks them, even after a crash."""
        from edge.messages import run_event, run_message

        # The sample's CSV is staged inside the transaction (hidden file written and fsynced
        # while the commit flushes) and published only after the commit; the exporter's lock
        # is taken first, as `Exporter.export` does, and held until it is published.
        with self.exporter.lock:
            staged: list[Any] = []
            try:
                with self.store.write() as db:
                    # A run held for review supersedes nothing (runs.insert_run).
                    olds = [] if rec.needs_review else runs.current_reads_of_plate(db, rec.plate_id)
                    events = {
                        o[0]: run_event(
                            o[0],
                            "superseded",
                            edit=o[1] + 1,
                            reason="re-read",
                            superseded_by=rec.run_id,
                        )
                        for o in olds
                    }
                    message = run_message(self.settings, rec, result)
                    superseded = runs.insert_run(
                        db,
                        rec,
                        wells=result.wells,
                        rows=result.rows,
                        distribution=result.distribution,
                        statistics=result.statistics,
                        message_json=message,
                        superseded_events=events,
                    )
                    runs.add_pending_images(db, rec.run_id, pending or {})
                    moved: set[str] = set()
                    if not rec.needs_review:
                        moved = self._recompute_plates(
                            db, [rec.plate_id], rec.sample_number, staged
                        )
                    elif not samples.sample_exists(db, rec.sample_number):
                        # A run held for review counts no row: an existing sample's summary and
                        # CSV stay as they were. A sample seen only through held reads is still
                        # listed (0 plates) so the operator finds it, with no CSV due.
                        self._recompute(db, rec.sample_number)
                        samples.mark_csv_done(db, rec.sample_number)
            except BaseException:
                self.exporter.discard(staged)
                raise
            t_commit = time.perf_counter()
            self.exporter.publish_all(staged)
        if timings is not None:
            timings["csv publish"] = (time.perf_counter() - t_commit) * 1e3
        for sample in moved - {rec.sample_number}:  # the pipeline announces the run's own
            self.events.publish("sample.updated", {"sample_number": sample})
        return superseded

    def flush_pending_images(self, run_id: str | None = None) -> int:
        """Write committed display images into their run folders (`edge.pending_images`)."""
        return pending_images.flush(self.store, self.images_dir, run_id)

    def _recompute(self, db: Any, sample_number: str) -> SampleSummary:
        params = self.get_runtime_settings()
        n_cols = self._grid.plate_format.cols if self._grid else 12
        return samples.recompute_sample(
            db, sample_number, n_cols=n_cols, protective_titre=params.protective_titre
        )

    def _recompute_plates(
        self, db: Any, plate_ids: list[str], sample_number: str, staged: list[Any]
    ) -> set[str]:
        """Recompute, inside the caller's transaction, every sample that gains or loses a
        current read of these plates (a plate moved to a corrected sample number leaves the
        old one), and stage each one's CSV (`staged`, published by the caller after the
        commit). Returns the sample numbers recomputed."""
        recomputed = samples.samples_of_plates(db, plate_ids) | {sample_number}
        for sample in sorted(recomputed):
            summary = self._recompute(db, sample)
            one = self.exporter.stage(summary, summary.model_dump_json())
            if one is not None:
                staged.append(one)
        return recomputed

    def export_csv(self, sample_number: str) -> Path:
        return self.exporter.export(sample_number)

    def run_retention(self) -> None:
        from edge.retention import run_once

        run_once(self)
