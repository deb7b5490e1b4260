"""Writes of one ingest batch through the cloud's data access (`cloud.crud.results`).

Plain new runs take the bulk path (`cloud.ingest.fastpath`: same rows, COPY, each sample
pooled once). Every other message goes through the functions the rest of the cloud uses:
`upsert_run` and `apply_event` (idempotent on `(run_id, edit)`; pooled samples recomputed in
the same transaction; dashboards notified) and `record_device_status`. A batch is one
transaction, each message inside it a savepoint, so a message the data access refuses
(`ResultError`: another device's run, a revoked device) is dead-lettered without undoing the
rest of the batch. Database errors are not caught here: the worker decides whether the
database is away (hold and retry) or one message's values are to blame (bisect).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud.crud.results import ResultError, apply_event, record_device_status, upsert_run
from cloud.ingest.fastpath import insert_plain_runs, plain_runs
from cloud.ingest.validate import Accepted, Refused
from cloud.models import Device
from core.wire import DeviceStatus, RunEvent, RunMessage

logger = logging.getLogger(__name__)


@dataclass
class WriteResult:
    refused: list[Refused] = field(default_factory=list)
    runs_written: int = 0
    duplicates: int = 0
    events_applied: int = 0
    statuses: int = 0


def write_batch(session: Session, items: Sequence[Accepted], *, now: datetime) -> WriteResult:
    result = WriteResult()
    devices: dict[uuid.UUID, Device | None] = {}
    for item in items:
        if item.device.id not in devices:
            devices[item.device.id] = session.get(Device, item.device.id)
    # Plain new runs first, in bulk (before the ORM has loaded anything they change).
    runs = [
        (i.message, dev)
        for i in items
        if isinstance(i.message, RunMessage) and (dev := devices[i.device.id]) is not None
    ]
    plain = plain_runs(session, runs)
    done = {id(m) for m, _ in plain}
    result.runs_written += insert_plain_runs(session, plain, now=now)
    for item in items:
        device = devices[item.device.id]
        if device is None:
            result.refused.append(_refuse(item, "device: not registered"))
            continue
        msg = item.message
        if id(msg) in done:
            continue
        try:
            with session.begin_nested():
                if isinstance(msg, RunMessage):
                    applied = upsert_run(session, msg, device=device)
                    if applied.status == "applied":
                        result.runs_written += 1
                    else:
                        result.duplicates += 1
                elif isinstance(msg, RunEvent):
                    applied = apply_event(session, msg, device=device)
                    if applied.status == "applied":
                        result.events_applied += 1
                    else:
                        result.duplicates += 1
                elif isinstance(msg, DeviceStatus):
                    record_device_status(session, msg, device=device)
                    result.statuses += 1
        except ResultError as exc:
            result.refused.append(_refuse(item, str(exc)))
    seen = sorted({i.device.id for i in items}, key=str)
    if seen:
        # Any message is a sign of life, not only status messages.
        session.execute(
            text(
                "UPDATE devices SET last_seen_at = :now WHERE id = ANY(:ids) "
                "AND (last_seen_at IS NULL OR last_seen_at < :now)"
            ),
            {"now": now, "ids": seen},
        )
    return result


def _refuse(item: Accepted, reason: str) -> Refused:
    msg = item.message
    return Refused(
        item.incoming,
        reason[:2000],
        item.device.site,
        item.device.slug,
        getattr(msg, "run_id", None),
        getattr(msg, "edit", None),
    )
