"""The hot read endpoints as JSON bytes: one connection, one statement per body, no ORM.

Sample list, sample detail and run detail are what dashboards poll. Going through ORM
objects and pydantic models cost most of each request's CPU (a run detail is ~100 rows),
so these functions read plain rows with Core, let Postgres build the big nested parts
(`json_agg` of a run's wells and rows, the stored JSON columns as text) and serialise the
rest with orjson. The shapes are exactly `SamplePage`, `SampleDetail` and `RunDetail` of
`cloud.schemas_results`; tests validate the bytes against those models and compare them
with the ORM path's values.

Every function takes a `Scope`: rows of sites outside it are invisible (None), as in
`cloud.crud.queries`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import Connection, Engine, Select, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.exc import DBAPIError

from cloud.crud import queries
from cloud.crud.scope import Scope
from cloud.models import Sample

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Same datetime text as pydantic ("...Z" for UTC, fraction only when there is one).
_OPTS = orjson.OPT_UTC_Z


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=_OPTS)


def read(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` on a pooled autocommit connection of `cloud.db.make_read_engine`.

    Autocommit: each statement is its own snapshot and no transaction is left open, so giving
    the connection back needs no ROLLBACK round trip. No pre-ping either: when a pooled
    connection turns out dead (database restarted, connection killed), SQLAlchemy invalidates
    the pool and `work` runs once more on a fresh connection; it only reads, so that is safe.
    On a busy host every round trip waits for Postgres to be scheduled, and those waits are
    what the latency tail is made of.
    """
    try:
        with engine.connect() as conn:
            return work(conn)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        logger.warning("read connection was dead (%s); retrying once", type(exc.orig).__name__)
    with engine.connect() as conn:
        return work(conn)


_LIST_COLUMNS = (
    Sample.id,
    Sample.site_id,
    Sample.sample_number,
    Sample.submission_number,
    Sample.n_runs,
    Sample.n_plates,
    Sample.rows_total,
    Sample.gmt,
    Sample.flags,
    Sample.first_read_at,
    Sample.last_read_at,
)
_LIST_KEYS = tuple(c.key for c in _LIST_COLUMNS)


def sample_page(
    conn: Connection,
    *,
    scope: Scope,
    flt: queries.SampleFilter,
    limit: int,
    cursor: str | None = None,
) -> bytes:
    """`SamplePage` JSON: newest first, keyset-paged on (last_read_at, id).

    Raises `queries.CursorError` for a cursor this API did not hand out.
    """
    # `filtered` and `after_cursor` only add WHERE clauses; the column tuple type is noise.
    base = cast("Select[Any]", select(*_LIST_COLUMNS))
    query = queries.filtered(base, scope=scope, flt=flt)
    query = queries.after_cursor(query, cursor)
    query = query.order_by(Sample.last_read_at.desc(), Sample.id.desc()).limit(limit + 1)
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [dict(zip(_LIST_KEYS, row, strict=True)) for row in rows]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = queries.cursor_for(last.last_read_at, last.id)
    return dumps({"items": items, "next_cursor": next_cursor})


# The scope test, (:all_sites OR site_id = ANY(:site_ids)), is part of each statement: an
# out-of-scope id reads like a missing one.
_SCOPE_PARAMS = (bindparam("site_ids", type_=ARRAY(UUID(as_uuid=True))),)


def _scope_params(scope: Scope) -> dict[str, Any]:
    return {"all_sites": scope.all_sites, "site_ids": sorted(scope.site_ids)}


_SAMPLE_SQL = text(
    """
    SELECT s.id, s.site_id, s.sample_number, s.submission_number, s.n_runs, s.n_plates,
           s.rows_total, s.gmt, s.flags, s.first_read_at, s.last_read_at, s.n_cols,
           s.distribution::text AS distribution,
           coalesce(s.summary -> 'statistics', '{}'::jsonb)::text AS statistics,
           coalesce(s.summary -> 'run_ids', '[]'::jsonb)::text AS current_run_ids
    FROM samples s
    WHERE s.id = :sample_id AND (CAST(:all_sites AS boolean) OR s.site_id = ANY(:site_ids))
    """
).bindparams(*_SCOPE_PARAMS)

_JSON_TEXT = ("distribution", "statistics", "current_run_ids")


def sample_detail(conn: Connection, *, sample_id: uuid.UUID, scope: Scope) -> bytes | None:
    """`SampleDetail` JSON from the stored pooled summary (never recomputed here)."""
    row = conn.execute(_SAMPLE_SQL, {"sample_id": sample_id, **_scope_params(scope)}).first()
    if row is None:
        return None
    body = dict(row._mapping)
    for key in _JSON_TEXT:
        body[key] = orjson.Fragment(body[key])
    return dumps(body)


_RUN_SQL = text(
    """
    SELECT r.run_id, r.edit, r.site_id, r.device_id, r.sample_id, r.plate_id,
           r.sample_number, r.submission_number, r.read_at, r.status, r.superseded_by,
           r.flags, r.review_reasons, r.n_rows, r.n_cols, r.extra::text AS extra,
           r.image_keys,
           coalesce((SELECT w.wells::text FROM run_wells w WHERE w.run_id = r.run_id),
                    '[]') AS wells,
           (SELECT coalesce(json_agg(json_build_object(
                       'row', o.row, 'label', o.label, 'endpoint', o.endpoint,
                       'titre', o.titre, 'flags', o.flags, 'counted', o.counted,
                       'counted_titre', o.counted_titre,
                       'exclusion_reason', o.exclusion_reason)
                    ORDER BY o.row), '[]')::text
            FROM run_rows o WHERE o.run_id = r.run_id) AS rows
    FROM runs r
    WHERE r.run_id = :run_id AND (CAST(:all_sites AS boolean) OR r.site_id = ANY(:site_ids))
    """
).bindparams(*_SCOPE_PARAMS)


def run_detail(conn: Connection, *, run_id: uuid.UUID, scope: Scope) -> bytes | None:
    """`RunDetail` JSON: the run, its wells (row, column order) and rows, in one statement."""
    row = conn.execute(_RUN_SQL, {"run_id": run_id, **_scope_params(scope)}).first()
    if row is None:
        return None
    body = dict(row._mapping)
    body["images"] = sorted(body.pop("image_keys") or {})
    for key in ("extra", "wells", "rows"):
        body[key] = orjson.Fragment(body[key])
    return dumps(body)
