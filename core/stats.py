"""Statistics over counted rows (DOMAIN rule 5) and endpoint distributions (rule 4).

Over the rows with ``counted=True``, using ``counted_titre``:

* ``n``: the number of counted rows;
* ``gmt`` = 2^(mean log2 titre), in titre units;
* ``mean_log2`` and ``sd_log2`` (sample SD, n − 1) of the log2 titres;
* ``cv_pct``: sample SD of the titres / mean titre × 100;
* ``share_protective``: fraction (0..1) of counted rows with titre ≥ ``protective_titre``.

Small samples: with ``n == 0`` every figure is None; with ``n == 1`` ``gmt`` and ``mean_log2``
exist but ``sd_log2`` and ``cv_pct`` are None (a spread needs two values). Never NaN.
``excluded`` counts the excluded rows by reason; ``excluded_total`` is their sum.

The distribution counts **counted** rows by endpoint column (``"0"`` for rows whose endpoint is
0 and still count, i.e. ``no_inhibition`` at half the first dilution), so its total equals
``n``. Excluded rows are reported in ``excluded``, not in the distribution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from core.titre import RowResult

logger = logging.getLogger(__name__)


class Statistics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    n: int = Field(ge=0)
    gmt: float | None = None
    mean_log2: float | None = None
    sd_log2: float | None = None
    cv_pct: float | None = None
    share_protective: float | None = Field(default=None, ge=0.0, le=1.0)
    protective_titre: float | None = Field(default=None, gt=0)
    excluded: dict[str, int] = Field(default_factory=dict)
    excluded_total: int = Field(default=0, ge=0)


def _sample_sd(values: list[float], mean: float) -> float:
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def compute_statistics(
    rows: Iterable[RowResult], *, protective_titre: float | None = None
) -> Statistics:
    """Rule-5 statistics over the counted rows; see the module docstring."""
    if protective_titre is not None and not (
        math.isfinite(protective_titre) and protective_titre > 0
    ):
        raise ValueError(f"protective_titre = {protective_titre!r} must be a positive number")
    titres: list[float] = []
    excluded: dict[str, int] = {}
    for row in rows:
        if row.counted and row.counted_titre is not None:
            titres.append(row.counted_titre)
        else:
            reason = row.exclusion_reason or "not_counted"
            excluded[reason] = excluded.get(reason, 0) + 1
    excluded = dict(sorted(excluded.items()))
    n = len(titres)
    if n == 0:
        return Statistics(
            n=0,
            protective_titre=protective_titre,
            excluded=excluded,
            excluded_total=sum(excluded.values()),
        )
    logs = [math.log2(t) for t in titres]
    mean_log2 = math.fsum(logs) / n
    sd_log2 = cv_pct = None
    if n > 1:
        sd_log2 = _sample_sd(logs, mean_log2)
        mean_titre = math.fsum(titres) / n
        cv_pct = _sample_sd(titres, mean_titre) / mean_titre * 100.0
    share = None
    if protective_titre is not None:
        share = sum(1 for t in titres if t >= protective_titre) / n
    return Statistics(
        n=n,
        gmt=2.0**mean_log2,
        mean_log2=mean_log2,
        sd_log2=sd_log2,
        cv_pct=cv_pct,
        share_protective=share,
        protective_titre=protective_titre,
        excluded=excluded,
        excluded_total=sum(excluded.values()),
    )


def empty_distribution(n_cols: int) -> dict[str, int]:
    if n_cols < 1:
        raise ValueError(f"n_cols = {n_cols!r} must be at least 1")
    return {str(c): 0 for c in range(n_cols + 1)}


def distribution(rows: Iterable[RowResult], n_cols: int) -> dict[str, int]:
    """Counted rows per endpoint column, keys ``"0"``..``str(n_cols)`` (all present)."""
    dist = empty_distribution(n_cols)
    for row in rows:
        if not row.counted:
            continue
        if row.endpoint > n_cols:
            raise ValueError(f"row {row.label} ends at column {row.endpoint} of {n_cols}")
        dist[str(row.endpoint)] += 1
    return dist


def add_distributions(parts: Iterable[dict[str, int]], n_cols: int) -> dict[str, int]:
    """Sum distributions key by key (all must use ``n_cols``)."""
    total = empty_distribution(n_cols)
    for part in parts:
        if set(part) != set(total):
            raise ValueError(f"distribution keys {sorted(part)} do not match 0..{n_cols}")
        for key, count in part.items():
            total[key] += count
    return total
