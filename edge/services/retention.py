"""Retention: free disk by age and by a free-disk floor, touching only runs the cloud has
acknowledged (every outbox entry of the run delivered).

A superseded or deleted run is removed whole. A current run still counts in its sample's
pooled summary, so only its images go; its wells and rows stay (a few kB) and the sample's
numbers never change because of retention.

`select_runs` is the pure keep/delete decision; `run_once` applies it in chunks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from edge.db import runs
from edge.db.store import utcnow
from edge.files import images
from edge.files.fsutil import disk_usage

if TYPE_CHECKING:
    from edge.ports import Host

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    run_id: str
    processed_at: datetime
    image_bytes: int
    acknowledged: bool  # every outbox entry of the run is delivered
    current: bool  # counts in its sample (neither superseded nor deleted)


def select_runs(
    runs: list[Candidate],
    *,
    now: datetime,
    max_age: timedelta,
    free_bytes: int,
    floor_bytes: int,
    limit: int,
) -> list[str]:
    """Runs to delete, oldest first: every acknowledged run older than `max_age`, then more
    acknowledged runs (superseded/deleted ones first) until the freed image bytes lift free
    space back over the floor. An unacknowledged run is never chosen."""
    acked = sorted(
        (r for r in runs if r.acknowledged and (r.image_bytes > 0 or not r.current)),
        key=lambda r: r.processed_at,
    )
    chosen = [r for r in acked if now - r.processed_at > max_age]
    picked = {r.run_id for r in chosen}
    freed = sum(r.image_bytes for r in chosen)
    if free_bytes + freed < floor_bytes:
        for r in sorted(acked, key=lambda r: (r.current, r.processed_at)):
            if free_bytes + freed >= floor_bytes:
                break
            if r.run_id not in picked:
                chosen.append(r)
                picked.add(r.run_id)
                freed += r.image_bytes
    return [r.run_id for r in chosen][:limit]


def candidates(app: Host) -> list[Candidate]:
    return [
        Candidate(run_id, datetime.fromisoformat(at), size, settled, current)
        for run_id, at, size, settled, current in runs.retention_rows(app.store.read())
    ]


def run_once(app: Host, floor_bytes: int) -> list[str]:
    cfg = app.settings.retention
    free, _ = disk_usage(app.settings.data_dir)
    doomed = select_runs(
        candidates(app),
        now=utcnow(),
        max_age=timedelta(days=cfg.max_age_days),
        free_bytes=free,
        floor_bytes=floor_bytes,
        limit=cfg.chunk,
    )
    removed: list[str] = []
    for run_id in doomed:
        with app.store.write() as db:
            image_dir = runs.release(db, run_id)
        if image_dir is None:
            continue
        images.remove_run_dir(app.settings.resolved_images_dir / image_dir)
        app.metrics.retention_deleted_total.inc()
        removed.append(run_id)
    if removed:
        logger.info("retention removed %d acknowledged run(s)", len(removed))
    return removed
