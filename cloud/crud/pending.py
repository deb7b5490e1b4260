"""Events that overtook their run: bounded per device and in time (issue 17, point 6).

QoS 1 gives no order, so a `deleted`/`superseded` event may arrive before its run and waits in
`run_events` until the run lands (`cloud.crud.results.apply_event`). A device could send such
events for runs that never come (2,000 rows in the review's probe, kept forever): each device
may have at most `MAX_PENDING_PER_DEVICE` waiting, and the ingest deletes those older than
`PENDING_TTL` (`purge_pending_events`, every few minutes).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

MAX_PENDING_PER_DEVICE = 100
PENDING_TTL = timedelta(days=7)


def pending_for_device(session: Session, *, device_id: uuid.UUID) -> int:
    return int(
        session.execute(
            text(
                "SELECT count(*) FROM run_events e WHERE e.detail->>'device' = :dev "
                "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = e.run_id)"
            ),
            {"dev": str(device_id)},
        ).scalar_one()
    )


def purge_pending_events(session: Session, *, now: datetime, ttl: timedelta = PENDING_TTL) -> int:
    """Delete events older than `ttl` whose run never arrived; returns how many."""
    result = session.execute(
        text(
            "DELETE FROM run_events e WHERE e.applied_at < :cutoff "
            "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = e.run_id)"
        ),
        {"cutoff": now - ttl},
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        logger.info("deleted %d event(s) whose run never arrived within %s", count, ttl)
    return count
