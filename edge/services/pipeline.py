"""The plate pipeline: one inference at a time, fed by a bounded queue.

For each plate: image -> detections -> well calls -> rows -> annotated image and thumbnail
encoded -> one SQLite transaction (run, wells, rows, superseding, pooled sample summary, outbox
entry, the display images in `pending_images`) -> LabWare CSV published in the share -> display
images written into the run's folder by a background writer.

Off the critical path or overlapped: the raw image (bytes as received) is written and fsynced
into a hidden folder renamed into place by an I/O thread while the plate is read
(`images.RawFolder`); the CSV is staged (hidden file, fsync) while the commit flushes and
renamed only after it (`share.StagedCsv`, `commit.RunCommitter.commit_run`).

Crash safety: the raw image is durable before the transaction and only becomes a run when it
commits; an image folder without a run is removed on start (`Appliance.start`). Display images
are durable in the commit; those a crash left unwritten are written on start (or on demand by
`run_image`). A committed change whose CSV was not written yet keeps `samples.csv_dirty = 1`
and is exported on start and by the retry worker. A plate that is queued but not yet committed
survives a crash in its source: uploads and captures are in the spool (`edge.files.spool`) before
their ticket is handed out, and the folder source moves a file only after its run is committed.

Two worker threads: `read` (decode, detect, well calls: one inference at a time) hands each
plate to `store` (display images, transaction, CSV), so one plate's disk work overlaps the next
plate's inference.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.db import runs
from edge.errors import ApplianceError, Busy, DiskFull, InvalidInput
from edge.files import images
from edge.schemas import ErrorOut, RunRequest, Ticket, TicketState

if TYPE_CHECKING:
    from edge.detect.plate import PlateResult
    from edge.ports import DiskGuard, Host, PlateReading, RunCommit

logger = logging.getLogger(__name__)

# uuid5 namespace for plate ids derived from image bytes: the same image is the same plate.
PLATE_NS = uuid.UUID("6f1c9a52-3c1e-4d52-9a57-3b0f6c9e2a10")
_MAX_TICKETS = 2000


def plate_id_for(sha256: str) -> str:
    return str(uuid.uuid5(PLATE_NS, sha256))


@dataclass
class Job:
    ticket_id: str
    req: RunRequest
    data: bytes
    filename: str
    source: str
    sha256: str
    captured_at: datetime
    image: np.ndarray | None = None
    plate_id: str | None = None
    supersedes: str | None = None
    force: bool = False  # a deliberate re-read: process even if these bytes are stored
    run_id: str = ""  # chosen when the raw image starts being written
    raw_folder: images.RawFolder | None = None
    on_done: Callable[[TicketState], None] | None = None
    created_at: float = field(default_factory=time.monotonic)
    needs_review: bool = False  # the stored run was held by the plate-quality gate


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class Pipeline:
    def __init__(
        self,
        app: Host,
        capacity: int,
        *,
        disk: DiskGuard,
        reading: PlateReading,
        commit: RunCommit,
    ) -> None:
        self.app = app
        self._disk = disk
        self._reading = reading
        self._commit = commit
        self._images_dir = app.settings.resolved_images_dir
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=capacity)
        self.capacity = capacity
        self._tickets: OrderedDict[str, TicketState] = OrderedDict()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._store_thread: threading.Thread | None = None
        # Plates read and waiting for the disk stage; small, so a slow disk throttles reading.
        self._store_q: queue.Queue[tuple[Job, PlateResult, float] | None] = queue.Queue(2)
        self.running = False  # True while a plate is being processed (preview backs off)
        self.last_stages_ms: dict[str, float] = {}
        self._stop = threading.Event()

        # Writes committed display images into run folders after the commit and the CSV.
        def write_images(run_id: str) -> None:
            commit.flush_pending_images(run_id)

        self.image_writer = images.BackgroundWriter(write_images)

    # -- tickets --------------------------------------------------------------------------
    def _set(self, ticket_id: str, state: str, **kw: Any) -> TicketState:
        with self._cond:
            ts = TicketState(
                ticket_id=ticket_id,
                state=state,
                updated_at=datetime.now(timezone.utc),
                **kw,
            )
            self._tickets[ticket_id] = ts
            self._tickets.move_to_end(ticket_id)
            while len(self._tickets) > _MAX_TICKETS:
                self._tickets.popitem(last=False)
            self._cond.notify_all()
        self.app.events.publish(
            "capture.progress",
            {
                "ticket_id": ticket_id,
                "state": state,
                "stage": kw.get("stage", ""),
                "run_id": kw.get("run_id"),
            },
        )
        return ts

    def knows(self, ticket_id: str) -> bool:
        with self._cond:
            ts = self._tickets.get(ticket_id)
            return ts is not None and ts.state in ("queued", "running")

    def refuse_busy(self) -> None:
        raise Busy(
            message=f"The appliance is busy: {self.capacity} plates are waiting. Try again "
            "in a few seconds; nothing was lost.",
            retry_after_s=5,
        )

    def ticket(self, ticket_id: str) -> TicketState | None:
        with self._cond:
            return self._tickets.get(ticket_id)

    def wait(self, ticket_id: str, timeout: float) -> TicketState | None:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                ts = self._tickets.get(ticket_id)
                if ts is None or ts.state in ("done", "failed"):
                    return ts
                left = deadline - time.monotonic()
                if left <= 0:
                    return ts
                self._cond.wait(left)

    # -- submission -----------------------------------------------------------------------
    def submit(self, job: Job) -> Ticket:
        now = datetime.now(timezone.utc)
        if not job.force:
            existing = runs.current_run_for_image(
                self.app.store.read(), job.sha256, job.req.sample_number
            )
            if existing is not None:
                # Idempotent: the same image bytes are already a stored run.
                self._set(job.ticket_id, "done", stage="duplicate", run_id=existing)
                if job.on_done:
                    job.on_done(self.ticket(job.ticket_id))  # type: ignore[arg-type]
                return Ticket(
                    id=job.ticket_id,
                    state="done",
                    created_at=now,
                    source=job.source,
                    filename=job.filename,
                    sample_number=job.req.sample_number,
                    run_id=existing,
                )
        self._disk.check_disk()
        self._set(job.ticket_id, "queued", stage="queued")
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            with self._cond:
                self._tickets.pop(job.ticket_id, None)
            self.refuse_busy()
        return Ticket(
            id=job.ticket_id,
            state="queued",
            created_at=now,
            source=job.source,
            filename=job.filename,
            sample_number=job.req.sample_number,
        )

    # -- workers --------------------------------------------------------------------------
    # Two stages so that the disk work of one plate (images, fsyncs, commit, CSV) overlaps the
    # inference of the next; inference itself stays one plate at a time.
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_loop, name="pipeline", daemon=True)
        self._store_thread = threading.Thread(
            target=self._store_loop, name="pipeline-store", daemon=True
        )
        self._store_thread.start()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the plate in hand and everything already read; queued plates stay with
        their source (the folder source keeps their files in the inbox)."""
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(None)
            self._thread.join(timeout)
            self._thread = None
        if self._store_thread is not None:
            self._store_q.put(None)
            self._store_thread.join(timeout)
            self._store_thread = None
        self.image_writer.stop()

    @property
    def depth(self) -> int:
        return self.queue.qsize() + self._store_q.qsize()

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            job = self.queue.get()
            if job is None:
                break
            t0 = time.perf_counter()
            outcome = self._guard(job, self.read, job)
            if isinstance(outcome, TicketState):
                self._finish(job, outcome)
            elif isinstance(outcome, str):
                self._finish(job, self._done(job, outcome, t0))
            else:
                self._store_q.put((job, outcome, t0))  # blocks if the disk falls behind

    def _store_loop(self) -> None:
        while True:
            item = self._store_q.get()
            if item is None:
                break
            job, result, t0 = item
            outcome = self._guard(job, self.store, job, result)
            if isinstance(outcome, str):
                outcome = self._done(job, outcome, t0)
            self._finish(job, outcome)

    def run_job(self, job: Job) -> TicketState:
        """Both stages in the calling thread (the benchmark, tools)."""
        t0 = time.perf_counter()
        outcome = self._guard(job, self.read, job)
        if not isinstance(outcome, (TicketState, str)):
            outcome = self._guard(job, self.store, job, outcome)
        if isinstance(outcome, str):
            outcome = self._done(job, outcome, t0)
        assert isinstance(outcome, TicketState)
        self._finish(job, outcome)
        return outcome

    def _guard(self, job: Job, func: Callable[..., Any], *args: Any) -> Any:
        """Run a stage; an error becomes the job's failed state, never a dead worker."""
        try:
            outcome = func(*args)
        except ApplianceError as exc:
            self._discard_raw(job)
            return self._fail(job, exc.code, exc.message)
        except Exception as exc:
            self._discard_raw(job)
            logger.exception("plate %s failed unexpectedly", job.filename)
            return self._fail(job, "internal", f"The plate could not be processed: {exc}")
        if isinstance(outcome, str):  # a stored run already has these bytes
            self._discard_raw(job)
        return outcome

    @staticmethod
    def _discard_raw(job: Job) -> None:
        """The plate will not become a run: its raw image folder goes (before any commit)."""
        if job.raw_folder is not None:
            job.raw_folder.discard()
            job.raw_folder = None

    def _done(self, job: Job, run_id: str, t0: float) -> TicketState:
        # Held runs are counted apart: the fleet alerts on the share of plates held for review.
        status = "needs_review" if job.needs_review else "done"
        self.app.metrics.runs_total.labels(status=status).inc()
        self.app.metrics.pipeline_seconds.observe(time.perf_counter() - t0)
        return self._set(job.ticket_id, "done", stage="done", run_id=run_id)

    def _finish(self, job: Job, ts: TicketState) -> None:
        if job.on_done:
            try:
                job.on_done(ts)
            except Exception:
                logger.exception("on_done callback failed for %s", job.filename)

    def _fail(self, job: Job, code: str, message: str) -> TicketState:
        logger.warning("plate %s (%s) failed: %s", job.filename, job.source, message)
        self.app.metrics.runs_total.labels(status="failed").inc()
        try:
            with self.app.store.write() as db:
                runs.record_failure(
                    db,
                    ticket_id=job.ticket_id,
                    source=job.source,
                    filename=job.filename,
                    sha256=job.sha256,
                    code=code,
                    reason=message,
                )
        except (sqlite3.Error, OSError):
            logger.warning("could not record the failure of %s", job.filename, exc_info=True)
        return self._set(
            job.ticket_id, "failed", stage="failed", error=ErrorOut(code=code, message=message)
        )

    def read(self, job: Job) -> PlateResult | str:
        """Stage 1: decode, detect, call wells. Returns the stored run id instead when these
        exact bytes are already a run (idempotent re-submission)."""
        app = self.app
        self._set(job.ticket_id, "running", stage="decode")
        if not job.force:
            existing = runs.current_run_for_image(
                app.store.read(), job.sha256, job.req.sample_number
            )
            if existing is not None:
                return existing
        # The raw image (bytes as received) is written and fsynced while the plate is read.
        job.run_id = str(uuid.uuid4())
        job.raw_folder = images.RawFolder(
            self._images_dir,
            job.run_id,
            images.raw_name(Path(job.filename).suffix or ".jpg"),
            job.data,
        )
        self._set(job.ticket_id, "running", stage="detect")
        self.running = True
        try:
            t0 = time.perf_counter()
            result = self._reading.read_frame(job.image, job.data)
            result.timings_ms["read"] = (time.perf_counter() - t0) * 1e3
        finally:
            self.running = False
        app.metrics.inference_seconds.observe(result.timings_ms["read"] / 1e3)
        return result

    def store(self, job: Job, result: PlateResult) -> str:
        """Stage 2: images, the one transaction, the CSV. Returns the run id."""
        app = self.app
        if not job.force:
            # The same bytes may have been committed while this plate waited for the disk.
            existing = runs.current_run_for_image(
                app.store.read(), job.sha256, job.req.sample_number
            )
            if existing is not None:
                return existing
        self._set(job.ticket_id, "running", stage="store")
        self._disk.check_disk()
        t_read = time.perf_counter()
        run_id = job.run_id
        plate_id = job.plate_id or (
            str(job.req.plate_id) if job.req.plate_id else plate_id_for(job.sha256)
        )
        derived = images.display_images(
            result.image,
            result.wells.values(),
            result.grid,
            result.scale,
            max_width=app.settings.annotated_max_width,
            thumbnail_width=app.settings.thumbnail_width,
        )
        raw = images.raw_name(Path(job.filename).suffix or ".jpg")
        image_files = {
            "raw": (raw, job.sha256, len(job.data)),
            **{
                role: (name, hashlib.sha256(derived[name]).hexdigest(), len(derived[name]))
                for role, name in (("annotated", "annotated.jpg"), ("thumbnail", "thumbnail.jpg"))
            },
        }
        t_encode = time.perf_counter()
        assert job.raw_folder is not None, "read() starts the raw image write"
        try:
            run_dir, nbytes = job.raw_folder.result()
        except OSError as exc:
            self._discard_raw(job)
            if is_disk_full(exc):
                raise DiskFull(message=self._disk.disk_full_message()) from exc
            raise
        job.raw_folder = None  # from here the folder is removed below if the commit fails
        rec = runs.RunRecord(
            run_id=run_id,
            plate_id=plate_id,
            sample_number=job.req.sample_number,
            submission_number=job.req.submission_number,
            description=job.req.description,
            operator=job.req.operator,
            source=job.source,
            filename=job.filename[:255],
            image_sha256=job.sha256,
            captured_at=job.captured_at,
            processed_at=datetime.now(timezone.utc),
            supersedes=job.supersedes,
            model=result.model,
            calibration_id=result.grid.grid_id,
            dilution=result.dilution.model_dump(mode="json"),
            timings_ms=result.timings_ms,
            image_dir=run_dir.name,
            image_bytes=nbytes + sum(len(v) for v in derived.values()),
            image_files=image_files,
            needs_review=result.needs_review,
            review_reasons=tuple(result.review_reasons),
            reading=result.reading,
        )
        t_write = time.perf_counter()
        commit_timings: dict[str, float] = {}
        try:
            # The transaction, and the sample's CSV: staged alongside, published after it.
            superseded = self._commit.commit_run(rec, result, derived, commit_timings)
            job.needs_review = rec.needs_review
        except BaseException as exc:
            images.remove_run_dir(run_dir)
            if is_disk_full(exc):
                raise DiskFull(message=self._disk.disk_full_message()) from exc
            raise
        t_csv = time.perf_counter()
        t_commit = t_csv - commit_timings.get("csv publish", 0.0) / 1e3
        app.events.publish(
            "run.created",
            {
                "run_id": run_id,
                "sample_number": rec.sample_number,
                "plate_id": plate_id,
                "needs_review": rec.needs_review,
                "review_reasons": list(rec.review_reasons),
            },
        )
        for old in superseded:
            app.events.publish(
                "run.updated", {"run_id": old, "status": "superseded", "superseded_by": run_id}
            )
        app.events.publish("sample.updated", {"sample_number": rec.sample_number})
        # Display images: committed above, written to the folder off the critical path.
        self.image_writer.submit(run_id)
        # Where the time of the last plate went (the benchmark prints these).
        self.last_stages_ms = {
            **{f"read.{k}": v for k, v in result.timings_ms.items() if k != "read"},
            "read": result.timings_ms.get("read", 0.0),
            "annotate+encode": (t_encode - t_read) * 1e3,
            "raw image wait": (t_write - t_encode) * 1e3,
            "commit (CSV staged alongside)": (t_commit - t_write) * 1e3,
            "csv publish": (t_csv - t_commit) * 1e3,
        }
        return run_id


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_request(req: RunRequest) -> RunRequest:
    """Sanitised copy of the request; a sample number that can't be made safe is refused."""
    from core.labware import SampleNumberError, safe_sample_number
    from core.sanitize import clean_sample_number

    try:
        cleaned = clean_sample_number(req.sample_number)
        safe_sample_number(cleaned)  # refused here if no safe file name can be made from it
    except SampleNumberError as exc:
        raise InvalidInput(
            code="bad_sample_number", message=f"Check the sample number: {exc}."
        ) from exc
    return req.model_copy(update={"sample_number": cleaned})
