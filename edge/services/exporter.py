"""Writes each changed sample's LabWare CSV into the share and logs it.

A sample is "dirty" from the transaction that changed it until its CSV is written; writing is
retried on start and by a worker, so a share that was briefly unavailable loses nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from core.pooling import SampleSummary
from edge.db import samples
from edge.errors import NotFound
from edge.files.share import ShareError, StagedCsv, WrittenCsv, write_sample_csv

if TYPE_CHECKING:
    from edge.ports import Host, RuntimeSource

logger = logging.getLogger(__name__)


class Exporter:
    def __init__(self, app: Host, runtime: RuntimeSource) -> None:
        self.app = app
        self.runtime = runtime
        self.share_dir = app.settings.share_dir
        self._lock = threading.Lock()  # one CSV writer: files of one sample never interleave

    def export(self, sample_number: str) -> Path:
        """Write the sample's current CSV now; returns the file written."""
        with self._lock:
            db = self.app.store.read()
            # one read: the CSV and the dirty mark refer to the same state
            summary_json = samples.summary_json(db, sample_number)
            if summary_json is None:
                raise NotFound(message=f"There is no sample {sample_number!r} to export.")
            summary = SampleSummary.model_validate_json(summary_json)
            template = self.runtime.get().csv_template
            written = write_sample_csv(
                self.share_dir,
                summary,
                template=template,
                when=datetime.now(timezone.utc),
                naming=self.app.settings.share.naming,
            )
            self._record(written, summary_json)
        return written.path

    # -- the CSV of a run's commit, staged alongside it ------------------------------------
    # The caller holds `lock` from `stage` (inside the run's transaction) to `publish` (after
    # its commit), so no other CSV of the sample can land in between; it takes `lock` before
    # the store's write lock, the same order as `export`.
    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def stage(self, summary: SampleSummary, summary_json: str) -> tuple[StagedCsv, str] | None:
        """Render and start writing the CSV of a state about to be committed; None (logged,
        the sample stays due for the retry worker) when the share is not writable."""
        try:
            staged = StagedCsv(
                self.share_dir,
                summary,
                template=self.runtime.get().csv_template,
                when=datetime.now(timezone.utc),
                naming=self.app.settings.share.naming,
            )
        except (OSError, ShareError) as exc:
            logger.warning(
                "CSV for sample %s not written yet (%s); it will be retried",
                summary.sample_number,
                exc,
            )
            return None
        return staged, summary_json

    def publish(self, staged: tuple[StagedCsv, str]) -> bool:
        """After the commit: the CSV into place, logged; False (logged, retried later) if not."""
        csv, summary_json = staged
        try:
            written = csv.publish()
            self._record(written, summary_json)
        except (OSError, ShareError) as exc:
            logger.warning(
                "CSV for sample %s not written yet (%s); it will be retried",
                csv.written.sample_number,
                exc,
            )
            return False
        return True

    def publish_all(self, staged: list[tuple[StagedCsv, str]]) -> None:
        """Publish the CSVs staged with one transaction, after its commit; one that fails
        leaves its sample due (the retry worker writes it) and never fails the others."""
        for one in staged:
            try:
                self.publish(one)
            except Exception:
                # Committed: never fail the run for its CSV; the sample stays due.
                logger.exception("CSV of sample %s not published", one[0].written.sample_number)

    @staticmethod
    def discard(staged: list[tuple[StagedCsv, str]]) -> None:
        """The transaction failed: remove whatever was staged for it."""
        for csv, _ in staged:
            csv.discard()

    def _record(self, written: WrittenCsv, summary_json: str) -> None:
        with self.app.store.write(durable=False) as wdb:
            samples.record_csv(
                wdb,
                sample_number=written.sample_number,
                file_name=written.path.name,
                template=written.template,
                sha256=written.sha256,
                written_at=written.written_at,
                summary_at_write=summary_json,
            )
        self.app.metrics.csv_written_total.inc()
        self.app.events.publish(
            "sample.updated", {"sample_number": written.sample_number, "csv": written.path.name}
        )

    def export_quietly(self, sample_number: str) -> bool:
        """Export; on failure log it and leave the sample dirty for the retry worker."""
        try:
            self.export(sample_number)
        except (OSError, ShareError, NotFound) as exc:
            logger.warning(
                "CSV for sample %s not written yet (%s); it will be retried", sample_number, exc
            )
            return False
        return True

    def export_dirty(self) -> int:
        done = 0
        for sample in samples.dirty_samples(self.app.store.read()):
            done += int(self.export_quietly(sample))
        return done
