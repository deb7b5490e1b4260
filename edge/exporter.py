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

from edge import repo
from edge.errors import NotFound
from edge.share import ShareError, write_sample_csv

if TYPE_CHECKING:
    from edge.app import Appliance

logger = logging.getLogger(__name__)


class Exporter:
    def __init__(self, app: Appliance) -> None:
        self.app = app
        self._lock = threading.Lock()  # one CSV writer: files of one sample never interleave

    def export(self, sample_number: str) -> Path:
        """Write the sample's current CSV now; returns the file written."""
        with self._lock:
            db = self.app.store.read()
            row = db.execute(
                "SELECT summary FROM samples WHERE sample_number = ?", [sample_number]
            ).fetchone()
            if row is None:
                raise NotFound(message=f"There is no sample {sample_number!r} to export.")
            summary_json = row[0]
            summary = repo.stored_summary(db, sample_number)
            template = self.app.get_runtime_settings().csv_template
            written = write_sample_csv(
                self.app.share_dir, summary, template=template, when=datetime.now(timezone.utc)
            )
            with self.app.store.write(durable=False) as wdb:
                repo.record_csv(
                    wdb,
                    sample_number=sample_number,
                    file_name=written.path.name,
                    template=template,
                    sha256=written.sha256,
                    written_at=written.written_at,
                    summary_at_write=summary_json,
                )
        self.app.metrics.csv_written_total.inc()
        self.app.events.publish(
            "sample.updated", {"sample_number": sample_number, "csv": written.path.name}
        )
        return written.path

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
        for sample in repo.dirty_samples(self.app.store.read()):
            done += int(self.export_quietly(sample))
        return done
