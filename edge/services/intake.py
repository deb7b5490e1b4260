"""Intake: every way a plate comes in becomes a ticket on the pipeline's queue.

`Intake` takes camera captures and uploads (each spooled to disk before it is queued, so an
accepted plate survives a restart: `replay_spool`), files from the watched folder, and serves
the throttled live preview.

`FolderWatcher`, the watched-folder source: a plate reader drops image files into `inbox`.

A file is submitted once its size and mtime have stayed the same for `stable_s` (the reader has
finished writing it), and moved to `processed/` only after its run is committed (or to `failed/`
with a `.reason.txt` beside it when it cannot be read). Until then it stays in the inbox, so a
crash or restart processes it again; the pipeline recognises the same bytes (sha256) and does not
count them twice. Events from watchdog wake the scanner early; a periodic rescan catches anything
the events missed (network shares often send none).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import FolderCaptureSettings
from edge.errors import ApplianceError, Busy, DiskFull, InvalidInput, NotFound
from edge.files import images
from edge.schemas import RunRequest, Ticket, TicketState
from edge.services.pipeline import Job, check_request, is_disk_full, sha256_of

if TYPE_CHECKING:
    from edge.capture import CaptureSource
    from edge.config import EdgeSettings
    from edge.files.spool import Spool
    from edge.ports import DiskGuard, Gate, IntakePort
    from edge.services.pipeline import Pipeline

logger = logging.getLogger(__name__)


def sample_from_name(path: Path) -> str:
    """The sample number a plate reader puts in the file name: `<sample>[__anything].ext`."""
    return path.stem.split("__", 1)[0]


class FolderWatcher:
    def __init__(self, app: IntakePort, settings: FolderCaptureSettings) -> None:
        self.app = app
        self.settings = settings
        self.inbox = settings.inbox
        self.processed = settings.processed or settings.inbox / "processed"
        self.failed = settings.failed or settings.inbox / "failed"
        self._seen: dict[Path, tuple[int, int, float]] = {}
        self._inflight: set[Path] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None

    def start(self) -> None:
        for folder in (self.inbox, self.processed, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        self._start_observer()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="folder-watch", daemon=True)
        self._thread.start()

    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            logger.warning("watchdog is not installed: the inbox is polled only")
            return
        wake = self._wake

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # Only changes wake the scanner: our own reads raise opened/closed_no_write
                # events, and waking on those would spin.
                if event.event_type in ("created", "modified", "moved", "closed"):
                    wake.set()

        observer = Observer()
        observer.schedule(_Handler(), str(self.inbox), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.unschedule_all()  # no late inotify events into a stopping emitter
            self._observer.stop()
            self._observer.join(10)
            self._observer = None
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except OSError:
                logger.warning("cannot scan the inbox %s", self.inbox, exc_info=True)
            # Wake early on a file event, but re-check stability at least every stable_s.
            self._wake.wait(min(self.settings.poll_s, max(0.05, self.settings.stable_s)))
            self._wake.clear()

    def _candidates(self) -> list[Path]:
        out = []
        with os.scandir(self.inbox) as it:
            for entry in it:
                if not entry.is_file() or entry.name.startswith("."):
                    continue
                lower = entry.name.lower()
                if any(fnmatch.fnmatch(lower, p.lower()) for p in self.settings.patterns):
                    out.append(Path(entry.path))
        return sorted(out)

    def scan(self) -> int:
        """Submit every stable, not yet submitted file; returns how many were submitted."""
        now = time.monotonic()
        submitted = 0
        present = set()
        for path in self._candidates():
            present.add(path)
            with self._lock:
                if path in self._inflight:
                    continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            seen = self._seen.get(path)
            if seen is None or seen[:2] != key:
                self._seen[path] = (*key, now)
                if self.settings.stable_s > 0:
                    continue
            elif now - seen[2] < self.settings.stable_s:
                continue
            if self.app.pipeline.queue.full():
                break  # busy: leave the rest in the inbox for the next round
            if self._submit(path):
                submitted += 1
            else:
                break  # busy or disk full: try again on the next round, in order
        for gone in set(self._seen) - present:
            self._seen.pop(gone, None)
        return submitted

    def _submit(self, path: Path) -> bool:
        try:
            data = path.read_bytes()
        except OSError as exc:
            logger.warning("cannot read %s yet: %s", path.name, exc)
            return True
        req = RunRequest(
            sample_number=sample_from_name(path)[:64] or "unknown", operator="plate-reader"
        )
        with self._lock:
            self._inflight.add(path)
        try:
            req = check_request(req)
            self.app.submit_bytes(
                data,
                path.name,
                req,
                source="folder",
                on_done=self._when_done(path),
            )
        except (Busy, DiskFull) as exc:
            with self._lock:
                self._inflight.discard(path)
            logger.debug("inbox file %s waits: %s", path.name, exc.message)
            return False
        except ApplianceError as exc:
            self._move(path, self.failed, reason=exc.message)
            with self._lock:
                self._inflight.discard(path)
        return True

    def _when_done(self, path: Path) -> Callable[[TicketState], None]:
        def done(ts: TicketState) -> None:
            self._done(path, ts)

        return done

    def _done(self, path: Path, ts: TicketState) -> None:
        try:
            if ts.state == "done":
                self._move(path, self.processed)
            elif ts.error is not None and ts.error.code in ("disk_full", "no_detector"):
                # Not the file's fault: leave it in the inbox to be retried.
                logger.warning("inbox file %s stays for a retry: %s", path.name, ts.error.message)
                self._seen.pop(path, None)
            else:
                reason = ts.error.message if ts.error else "failed"
                self._move(path, self.failed, reason=reason)
        finally:
            with self._lock:
                self._inflight.discard(path)

    def _move(self, path: Path, folder: Path, reason: str | None = None) -> None:
        target = folder / path.name
        if target.exists():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
            target = folder / f"{path.stem}-{stamp}{path.suffix}"
        if reason is not None:
            target.with_name(target.name + ".reason.txt").write_text(reason + "\n", "utf-8")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return
        self._seen.pop(path, None)
        logger.info("moved %s to %s", path.name, folder.name)


class Intake:
    def __init__(
        self,
        settings: EdgeSettings,
        gate: Gate,
        disk: DiskGuard,
        pipeline: Pipeline,
        spool: Spool,
        source: CaptureSource,
    ) -> None:
        self._settings = settings
        self._gate = gate
        self._disk = disk
        self.pipeline = pipeline
        self.spool = spool
        self.source = source
        self._spool_lock = threading.Lock()
        self._preview: tuple[float, bytes] | None = None
        self._preview_lock = threading.Lock()

    def capture(self, req: RunRequest) -> Ticket:
        self._gate.require_started()
        req = check_request(req)
        self._disk.check_disk()
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
        self._gate.require_started()
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
        self._disk.check_disk()
        spool = self.spool
        job.on_done = self._unspool(job.ticket_id)
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
                    raise DiskFull(message=self._disk.disk_full_message()) from exc
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
        on_done: Callable[[TicketState], None] | None = None,
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

    def preview_jpeg(self) -> bytes | None:
        """Throttled to `preview_max_fps`; while a plate is processed the last frame is reused
        so the preview never takes CPU from inference."""
        min_gap = 1.0 / self._settings.preview_max_fps
        with self._preview_lock:
            cached = self._preview
            now = time.monotonic()
            if cached and (now - cached[0] < min_gap or self.pipeline.running):
                return cached[1]
            frame = self.source.preview_frame()
            if frame is None:
                return cached[1] if cached else None
            data = images.encode_jpeg(images.thumbnail(frame, self._settings.preview_width), 75)
            self._preview = (now, data)
            return data
