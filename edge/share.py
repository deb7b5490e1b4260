"""The LabWare share: one CSV per change to a sample, written atomically inside the share only.

A LIMS poller reads the share folder; it must never see half a file, so each CSV is written to
a hidden temporary name in the share itself (same filesystem), fsynced, renamed into place and
the folder fsynced. The file name comes from `core.labware.csv_filename` (sanitised sample
number + UTC timestamp) and is checked to resolve inside the share before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core import labware
from edge.fsutil import atomic_write

logger = logging.getLogger(__name__)


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


def target_path(share_dir: Path, sample_number: str, when: datetime) -> Path:
    name = labware.csv_filename(sample_number, when)
    share = Path(os.path.realpath(share_dir))
    final = Path(os.path.realpath(share / name))
    if final.parent != share or name != final.name:
        raise ShareError(f"refusing to write {name!r}: it would land outside the share {share}")
    return final


def write_sample_csv(share_dir: Path, summary: Any, *, template: str, when: datetime) -> WrittenCsv:
    sample_number = str(summary.sample_number)
    data = render(summary, template)
    if not share_dir.is_dir():
        # Never create it here: an unmounted share would silently fill the local mount point.
        raise ShareError(f"the LabWare share {share_dir} is not available (not mounted?)")
    final = target_path(share_dir, sample_number, when)
    if final.exists():
        # Two changes in the same timestamp tick: never overwrite a file a poller may be reading.
        final = final.with_name(f"{final.stem}-{when.strftime('%f')}{final.suffix}")
    atomic_write(final, data)
    logger.info("wrote LabWare CSV %s for sample %s", final.name, sample_number)
    return WrittenCsv(
        sample_number=sample_number,
        path=final,
        template=template,
        sha256=hashlib.sha256(data).hexdigest(),
        written_at=when,
    )
