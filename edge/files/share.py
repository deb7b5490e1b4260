"""The LabWare share: each sample's CSV, written atomically inside the share only.

A LIMS poller reads the share folder; it must never see half a file, so each CSV is written to
a hidden temporary name in the share itself (same filesystem), fsynced, renamed into place and
the folder fsynced. The file name depends on the `share.naming` setting (docs/edge.md):

- `per_sample` (default): one current `<token>.csv` per sample, replaced atomically on every
  change, so a LIMS that imports every file in the folder sees each sample once. A sample left
  with no current plate keeps its file, saying N 0 (the LIMS learns the figures are gone; a
  removed file would tell it nothing). The token is `core.sanitize.safe_sample_number`; when
  that is not the sample number itself (characters replaced), a short hash of the sample number
  is appended so two sample numbers never share a file.
- `per_save`: `core.labware.csv_filename` (token + UTC timestamp), a new file per change, for
  LIMS imports that move each file away once read.

Either name is checked to resolve inside the share before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from core import labware
from core.sanitize import clean_sample_number, safe_sample_number
from edge.files.fsutil import atomic_write, fsync_dir, io_pool, tmp_name_for

logger = logging.getLogger(__name__)

Naming = Literal["per_sample", "per_save"]
NAMINGS: tuple[Naming, ...] = ("per_sample", "per_save")


class ShareError(Exception):
    pass


@dataclass(frozen=True)
class WrittenCsv:
    sample_number: str
    path: Path
    template: str
    sha256: str
    written_at: datetime


def render(summary: Any, template: str) -> bytes:
    buf = io.StringIO(newline="")
    labware.render_csv(summary, buf, template=template)
    return buf.getvalue().encode("utf-8")


def current_name(sample_number: str) -> str:
    """The `per_sample` file name: `<token>.csv`, plus `~<hash>` if the token is lossy."""
    token = safe_sample_number(sample_number)
    clean = clean_sample_number(sample_number)
    if token != clean:
        token += "~" + hashlib.sha256(clean.encode("utf-8")).hexdigest()[:8]
    return f"{token}.csv"


def target_path(
    share_dir: Path, sample_number: str, when: datetime, naming: Naming = "per_save"
) -> Path:
    if naming == "per_sample":
        name = current_name(sample_number)
    else:
        name = labware.csv_filename(sample_number, when)
    share = Path(os.path.realpath(share_dir))
    final = Path(os.path.realpath(share / name))
    if final.parent != share or name != final.name:
        raise ShareError(f"refusing to write {name!r}: it would land outside the share {share}")
    return final


def _final_path(share_dir: Path, sample_number: str, when: datetime, naming: Naming) -> Path:
    if not share_dir.is_dir():
        # Never create it here: an unmounted share would silently fill the local mount point.
        raise ShareError(f"the LabWare share {share_dir} is not available (not mounted?)")
    final = target_path(share_dir, sample_number, when, naming)
    if naming == "per_save" and final.exists():
        # Two changes in the same timestamp tick: never overwrite a file a poller may be reading.
        final = final.with_name(f"{final.stem}-{when.strftime('%f')}{final.suffix}")
    return final


def write_sample_csv(
    share_dir: Path,
    summary: Any,
    *,
    template: str,
    when: datetime,
    naming: Naming = "per_sample",
) -> WrittenCsv:
    """Write the sample's CSV now (`os.replace`: a `per_sample` file is swapped whole)."""
    sample_number = str(summary.sample_number)
    data = render(summary, template)
    final = _final_path(share_dir, sample_number, when, naming)
    atomic_write(final, data)
    logger.info("wrote LabWare CSV %s for sample %s", final.name, sample_number)
    return WrittenCsv(
        sample_number=sample_number,
        path=final,
        template=template,
        sha256=hashlib.sha256(data).hexdigest(),
        written_at=when,
    )


class StagedCsv:
    """A CSV written in two steps around the run's commit: `stage` renders it and writes it
    under a hidden temporary name in the share (write + fsync in a thread of its own, so that
    flush overlaps the commit's); `publish`, called only once the commit is durable, renames
    it into place and fsyncs the folder. A poller never sees it before the commit, nor half of
    it; a crash in between leaves a hidden partial that `clean_partials` removes on start, and
    the sample stays due (`csv_dirty`) so it is exported again."""

    def __init__(
        self,
        share_dir: Path,
        summary: Any,
        *,
        template: str,
        when: datetime,
        naming: Naming = "per_sample",
    ) -> None:
        self.data = render(summary, template)
        self.final = _final_path(share_dir, str(summary.sample_number), when, naming)
        self.tmp = tmp_name_for(self.final)
        self.written = WrittenCsv(
            sample_number=str(summary.sample_number),
            path=self.final,
            template=template,
            sha256=hashlib.sha256(self.data).hexdigest(),
            written_at=when,
        )
        self._future = io_pool().submit(self._write)

    def _write(self) -> None:
        with open(self.tmp, "wb") as fh:
            fh.write(self.data)
            fh.flush()
            os.fsync(fh.fileno())

    def publish(self) -> WrittenCsv:
        try:
            self._future.result()
            os.replace(self.tmp, self.final)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.final.parent)
        logger.info(
            "wrote LabWare CSV %s for sample %s", self.final.name, self.written.sample_number
        )
        return self.written

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._future.result()
        self.tmp.unlink(missing_ok=True)
