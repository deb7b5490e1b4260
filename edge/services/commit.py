"""The run's one transaction, and the display images committed with it.

`RunCommitter.commit_run` commits a plate read together with its wells and rows, the superseding
of the plate's earlier read, every affected sample's recomputed summary (its CSV staged while the
commit flushes and published after it) and the outbox entries. The display images (annotated,
thumbnail) are committed in `pending_images` and written into the run's folder afterwards
(`flush`): by the pipeline's background writer, at start after a crash, or on demand when one is
asked for."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.db import runs, samples
from edge.files import images

if TYPE_CHECKING:
    from sqlite_utils import Database

    from core.pooling import SampleSummary
    from edge.db.store import Store
    from edge.detect.plate import PlateResult
    from edge.ports import GridSource, Host, RuntimeSource
    from edge.services.exporter import Exporter

logger = logging.getLogger(__name__)

# One writer at a time (background writer, start, a reader asking for an image).
_LOCK = threading.Lock()


def flush(store: Store, images_dir: Path, run_id: str | None = None) -> int:
    """Write one run's pending images (or all) and drop them from the database; returns the
    number of runs written."""
    with _LOCK:
        rows = runs.pending_images(store.read(), run_id)
        by_run: dict[str, tuple[str, dict[str, bytes]]] = {}
        for rid, image_dir, name, data in rows:
            by_run.setdefault(rid, (image_dir, {}))[1][name] = data
        for rid, (image_dir, files) in by_run.items():
            folder = images_dir / image_dir
            if folder.is_dir():
                images.write_derived(folder, files)
            else:  # retention removed the run's images meanwhile
                logger.info("images of run %s are gone; its pending ones are dropped", rid)
            # Not durable: if this is lost, the same files are written again on start.
            with store.write(durable=False) as wdb:
                runs.drop_pending_images(wdb, rid)
    return len(by_run)


class RunCommitter:
    def __init__(
        self,
        host: Host,
        exporter: Exporter,
        runtime: RuntimeSource,
        calibration: GridSource,
    ) -> None:
        self._host = host
        self._exporter = exporter
        self._runtime = runtime
        self._calibration = calibration
        self._images_dir = host.settings.resolved_images_dir

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
        from edge.services.messages import run_event, run_message

        # The sample's CSV is staged inside the transaction (hidden file written and fsynced
        # while the commit flushes) and published only after the commit; the exporter's lock
        # is taken first, as `Exporter.export` does, and held until it is published.
        with self._exporter.lock:
            staged: list[Any] = []
            try:
                with self._host.store.write() as db:
                    # A run held for review supersedes nothing (runs.insert_run).
                    olds = [] if rec.needs_review else runs.current_reads_of_plate(db, rec.plate_id)
                    events = {
                        old: run_event(
                            old,
                            "superseded",
                            edit=edit + 1,
                            reason="re-read",
                            superseded_by=rec.run_id,
                        )
                        for old, edit in olds
                    }
                    message = run_message(self._host.settings, rec, result)
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
                        moved = self.recompute_plates(db, [rec.plate_id], rec.sample_number, staged)
                    elif not samples.sample_exists(db, rec.sample_number):
                        # A run held for review counts no row: an existing sample's summary and
                        # CSV stay as they were. A sample seen only through held reads is still
                        # listed (0 plates) so the operator finds it, with no CSV due.
                        self._recompute(db, rec.sample_number)
                        samples.mark_csv_done(db, rec.sample_number)
            except BaseException:
                self._exporter.discard(staged)
                raise
            t_commit = time.perf_counter()
            self._exporter.publish_all(staged)
        if timings is not None:
            timings["csv publish"] = (time.perf_counter() - t_commit) * 1e3
        for sample in moved - {rec.sample_number}:  # the pipeline announces the run's own
            self._host.events.publish("sample.updated", {"sample_number": sample})
        return superseded

    def flush_pending_images(self, run_id: str | None = None) -> int:
        """Write committed display images into their run folders (`flush`)."""
        return flush(self._host.store, self._images_dir, run_id)

    def _recompute(self, db: Database, sample_number: str) -> SampleSummary:
        params = self._runtime.get()
        grid = self._calibration.grid
        n_cols = grid.plate_format.cols if grid else 12
        return samples.recompute_sample(
            db, sample_number, n_cols=n_cols, protective_titre=params.protective_titre
        )

    def recompute_plates(
        self, db: Database, plate_ids: list[str], sample_number: str, staged: list[Any]
    ) -> set[str]:
        """Recompute, inside the caller's transaction, every sample that gains or loses a
        current read of these plates (a plate moved to a corrected sample number leaves the
        old one), and stage each one's CSV (`staged`, published by the caller after the
        commit). Returns the sample numbers recomputed."""
        recomputed = samples.samples_of_plates(db, plate_ids) | {sample_number}
        for sample in sorted(recomputed):
            summary = self._recompute(db, sample)
            one = self._exporter.stage(summary, summary.model_dump_json())
            if one is not None:
                staged.append(one)
        return recomputed
