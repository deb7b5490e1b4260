"""Read-only figures the JSON API does not offer: last plate per device, GMT trends, health.

Each query takes the signed-in user's `Scope` (the same filter the API applies), so a page
never shows another site's data. Everything that changes data goes through the API.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from cloud.crud.scope import Scope
from cloud.models import Run, Sample
from core import present

STALE_AFTER = timedelta(minutes=10)
BACKLOG_WARN = 20
BACKLOG_AGE_WARN_S = 3600.0
DISK_WARN_BYTES = 2 * 1024**3


def scope_from_me(me: dict[str, Any]) -> Scope:
    """The scope of the user /auth/me described (same rule as `Scope.for_user`)."""
    if me.get("role") == "admin":
        return Scope.everything()
    return Scope(all_sites=False, site_ids=frozenset(uuid.UUID(s) for s in me.get("site_ids", [])))


@dataclass(frozen=True)
class LastPlate:
    run_id: uuid.UUID
    sample_id: uuid.UUID
    sample_number: str
    read_at: datetime


def last_plates(session: Session, *, scope: Scope) -> dict[uuid.UUID, LastPlate]:
    """The newest run of every visible device (DISTINCT ON uses ix_runs_device_read)."""
    query = (
        select(Run.device_id, Run.run_id, Run.sample_id, Run.sample_number, Run.read_at)
        .where(scope.clause(Run.site_id))
        .order_by(Run.device_id, Run.read_at.desc())
        .ext(distinct_on(Run.device_id))
    )
    return {
        row.device_id: LastPlate(row.run_id, row.sample_id, row.sample_number, row.read_at)
        for row in session.execute(query)
    }


@dataclass(frozen=True)
class Health:
    state: str  # online | offline | stale | never | revoked
    problems: list[str]
    severity: int  # higher sorts first


def device_health(device: dict[str, Any], *, now: datetime | None = None) -> Health:
    """Online/offline from the last status (the broker's last will says online=false)."""
    now = now or datetime.now(timezone.utc)
    if device.get("status") == "revoked":
        return Health("revoked", [], -1)
    status = device.get("last_status") or {}
    seen = device.get("last_seen_at")
    problems: list[str] = []
    if not status or seen is None:
        return Health("never", ["has never reported"], 2)
    seen_at = datetime.fromisoformat(seen) if isinstance(seen, str) else seen
    if not status.get("online", False):
        state = "offline"
        problems.append("offline (last will or shutdown)")
    elif now - seen_at > STALE_AFTER:
        state = "stale"
        problems.append(f"no status for {_ago(now - seen_at)}")
    else:
        state = "online"
    backlog = int(status.get("backlog") or 0)
    age = status.get("oldest_unsent_age_s")
    if backlog >= BACKLOG_WARN:
        problems.append(f"backlog of {backlog} runs")
    if age is not None and float(age) >= BACKLOG_AGE_WARN_S:
        problems.append(f"oldest unsent run is {_ago(timedelta(seconds=float(age)))} old")
    reason = status.get("sync_reason")
    if reason and reason not in ("ok", "connecting"):
        # The appliance's own reason code and sentence (edge.sync.reasons), e.g. its image
        # uploads refused; only what could still reach the cloud arrives here.
        problems.append(f"sync: {status.get('sync_message') or reason}")
    disk = status.get("disk_free_bytes")
    if disk is not None and int(disk) < DISK_WARN_BYTES:
        problems.append(f"only {human_bytes(int(disk))} disk free")
    severity = (3 if state in ("offline", "stale") else 0) + len(problems)
    return Health(state, problems, severity)


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def human_bytes(n: int) -> str:
    """Binary units, as the appliance shows them (`core.present.bytes_text`)."""
    return present.bytes_text(n)


@dataclass(frozen=True)
class Trends:
    periods: list[str]
    gmt: dict[str, dict[str, float]]  # site name -> period -> pooled GMT
    share: dict[str, dict[str, float]]  # site name -> period -> share >= protective
    protective: dict[str, float]  # site name -> protective titre used


def week_label(when: datetime) -> str:
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def pooled_trends(
    samples: list[tuple[str, datetime, dict[str, Any]]],
) -> Trends:
    """Per site and ISO week, pool the counted rows of the samples last read that week.

    GMT = 2^(Σ n·mean_log2 / Σ n) and share = Σ n·share / Σ n are exact for the pooled rows,
    not averages of averages.
    """
    n_sum: dict[tuple[str, str], float] = defaultdict(float)
    log_sum: dict[tuple[str, str], float] = defaultdict(float)
    share_n: dict[tuple[str, str], float] = defaultdict(float)
    share_sum: dict[tuple[str, str], float] = defaultdict(float)
    protective: dict[str, float] = {}
    periods: set[str] = set()
    for site, when, stats in samples:
        count = int(stats.get("n") or 0)
        mean_log2 = stats.get("mean_log2")
        if count <= 0 or mean_log2 is None:
            continue
        key = (site, week_label(when))
        periods.add(key[1])
        n_sum[key] += count
        log_sum[key] += count * float(mean_log2)
        share = stats.get("share_protective")
        if share is not None:
            share_n[key] += count
            share_sum[key] += count * float(share)
            if stats.get("protective_titre") is not None:
                protective[site] = float(stats["protective_titre"])
    gmt: dict[str, dict[str, float]] = defaultdict(dict)
    shares: dict[str, dict[str, float]] = defaultdict(dict)
    for (site, period), n in n_sum.items():
        gmt[site][period] = round(math.pow(2.0, log_sum[(site, period)] / n), 2)
    for (site, period), n in share_n.items():
        shares[site][period] = round(share_sum[(site, period)] / n, 4)
    return Trends(sorted(periods), dict(gmt), dict(shares), protective)


def trend_rows(
    session: Session,
    *,
    scope: Scope,
    site_id: uuid.UUID | None,
    since: date,
    until: date | None,
) -> list[tuple[str, datetime, dict[str, Any]]]:
    """(site name, last read, statistics) of the visible samples read in the window."""
    from cloud.models import Site

    query = (
        select(Site.name, Sample.last_read_at, Sample.summary["statistics"])
        .join(Site, Site.id == Sample.site_id)
        .where(
            scope.clause(Sample.site_id),
            Sample.n_plates > 0,
            Sample.last_read_at >= datetime.combine(since, datetime.min.time(), timezone.utc),
        )
    )
    if until is not None:
        end = datetime.combine(until + timedelta(days=1), datetime.min.time(), timezone.utc)
        query = query.where(Sample.last_read_at < end)
    if site_id is not None:
        query = query.where(Sample.site_id == site_id)
    return [
        (str(name), when, dict(stats or {}))
        for name, when, stats in session.execute(query.limit(100_000))
        if when is not None
    ]
