"""Sample search as people type it: a prefix of the sample number, the submission number or a
run's description, in any letter case.

Each of the three is one btree index on `lower(column) text_pattern_ops` (cloud.models.results,
migration s005), which
serves `lower(column) LIKE 'prefix%'` as an index range scan whatever the database collation.
The three lookups are a UNION ALL of sample ids, so each uses its own index; an OR across the
columns (and across the runs table for the description) would make Postgres scan samples.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, ColumnElement, bindparam, func, select, union_all

from cloud.models import Run, Sample
from cloud.models.results import RUN_DESCRIPTION as DESCRIPTION


def like_prefix(text: str) -> str:
    """`text` as a LIKE prefix pattern, its wildcards taken literally (backslash: the default
    escape character of LIKE in Postgres)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def matching_samples(q: str) -> ColumnElement[bool]:
    """Samples whose number, submission or any current run's description starts with `q`."""
    # Inlined (quoted by SQLAlchemy), not a server-side parameter: once psycopg prepares a
    # statement, Postgres may switch to a generic plan, and a generic `LIKE $1` cannot use a
    # prefix index (EXPLAIN with plan_cache_mode=force_generic_plan: a parallel seq scan of runs).
    pattern: BindParameter[str] = bindparam(
        "search_prefix", like_prefix(q.strip().lower()), literal_execute=True
    )
    ids: Any = union_all(
        select(Sample.id).where(func.lower(Sample.sample_number).like(pattern)),
        select(Sample.id).where(func.lower(Sample.submission_number).like(pattern)),
        select(Run.sample_id).where(func.lower(DESCRIPTION).like(pattern), Run.status == "current"),
    )
    return Sample.id.in_(ids)
