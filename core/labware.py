"""LabWare LIMS CSV templates (DOMAIN "The LabWare CSV"). Pure: writes to a given stream.

Both templates: header ``SAMPLE_NUMBER,TEST_NUMBER,REPORTED_NAME,ENTRY``, ``TEST_NUMBER``
``T001``, ``\\n`` line ends, UTF-8 without BOM (:func:`render_csv_bytes`; a text stream given to
:func:`render_csv` should be opened with ``encoding="utf-8", newline=""``), RFC 4180 quoting
only where a field needs it, then one count row per plate column ``1``..``N`` with the sample's
distribution.

``labware`` (the default) then adds the correct statistics of DOMAIN rule 5: ``N`` (counted
rows), ``GMT`` (2 dp, titre units), ``MEAN_LOG2`` and ``SD_LOG2`` (4 dp), ``CV_PCT`` (2 dp) and
``EXCLUDED`` (rows left out, any reason). Decision: like the legacy file it has no ``0`` count
row, so the LIMS layout stays the same; rows that count with endpoint 0 (``no_inhibition``)
are in ``N`` but in no count row. A figure that does not exist (N = 0, or a spread with N = 1)
is written as an empty ENTRY.

``labware-legacy`` reproduces the reference system byte for byte, including its maths:

* ``GMT`` = Σ column·count / Σ count (the mean endpoint *column*, not a geometric mean titre);
* ``MEAN`` = Σ count / 12, ``SD`` = population SD of the 12 bin counts (statistics of the bin
  heights, which mean nothing), ``CV`` = SD / MEAN from the unrounded values;
* formatting as the old Python code did: ``str(round(x, 2))`` (so ``5.8``, not ``5.80``) and
  ``str(round(x, 8))`` for CV. Worked example: GMT ``5.8``, MEAN ``1.25``, SD ``2.01``,
  CV ``1.60416126``.

The legacy count rows come from the sample's distribution, i.e. counted rows only: a row we
exclude (``unread``) is not in them, where the reference counted any row with a flowing well.
Flaws of the legacy template, kept on purpose for LIMS set up for it: rows with no flowing well
never appear (the GMT is biased upwards), flagged and excluded rows are invisible, the four
figures are not the statistics their names claim, and MEAN divides by the number of columns
whatever the number of rows. Where the reference would divide by zero (no counted row ends in
a column ≥ 1) we write an empty ENTRY for GMT and CV; MEAN and SD are then ``0.0``. On a
384-well plate the count rows run 1..24 and MEAN/SD use 24 bins (the reference knew only 96).

Rows are written by ``core.csvsafe`` (the product's one CSV writer): every text field (sample
number, test number, names) is neutralised, a field starting with ``=``, ``+``, ``-``, ``@``,
tab or CR (or their full-width forms) is prefixed with ``'`` so that a spreadsheet never
evaluates it. Numbers we compute are written as numbers.
"""

from __future__ import annotations

import io
import logging
import math
from datetime import datetime, timezone
from typing import Literal, TextIO

from core.csvsafe import Figure, csv_writer, neutralise
from core.pooling import SampleSummary
from core.sanitize import SampleNumberError, clean_sample_number, safe_sample_number

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEMPLATE",
    "HEADER",
    "TEMPLATES",
    "TEST_NUMBER",
    "SampleNumberError",
    "csv_filename",
    "legacy_figures",
    "neutralise",
    "render_csv",
    "render_csv_bytes",
    "safe_sample_number",
]

Template = Literal["labware", "labware-legacy"]
TEMPLATES: tuple[Template, ...] = ("labware", "labware-legacy")
DEFAULT_TEMPLATE: Template = "labware"
HEADER = ("SAMPLE_NUMBER", "TEST_NUMBER", "REPORTED_NAME", "ENTRY")
TEST_NUMBER = "T001"


def _legacy_round(value: float, digits: int) -> str:
    return str(round(value, digits))


def legacy_figures(distribution: dict[str, int], n_cols: int) -> dict[str, str]:
    """GMT, MEAN, SD and CV exactly as the reference system computed and printed them."""
    counts = [distribution.get(str(c), 0) for c in range(1, n_cols + 1)]
    total = sum(counts)
    mean = total / n_cols
    sd = math.sqrt(sum((c - mean) ** 2 for c in counts) / n_cols)
    if total == 0:
        return {"GMT": "", "MEAN": _legacy_round(mean, 2), "SD": _legacy_round(sd, 2), "CV": ""}
    gmt = sum(col * c for col, c in enumerate(counts, start=1)) / total
    return {
        "GMT": _legacy_round(gmt, 2),
        "MEAN": _legacy_round(mean, 2),
        "SD": _legacy_round(sd, 2),
        "CV": _legacy_round(sd / mean, 8),
    }


def _fixed(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _entries(summary: SampleSummary, template: Template) -> list[tuple[str, str]]:
    n_cols = summary.n_cols
    entries = [(str(c), str(summary.distribution.get(str(c), 0))) for c in range(1, n_cols + 1)]
    if template == "labware-legacy":
        entries.extend(legacy_figures(summary.distribution, n_cols).items())
        return entries
    st = summary.statistics
    entries.extend(
        [
            ("N", str(st.n)),
            ("GMT", _fixed(st.gmt, 2)),
            ("MEAN_LOG2", _fixed(st.mean_log2, 4)),
            ("SD_LOG2", _fixed(st.sd_log2, 4)),
            ("CV_PCT", _fixed(st.cv_pct, 2)),
            ("EXCLUDED", str(st.excluded_total)),
        ]
    )
    return entries


def render_csv(summary: SampleSummary, stream: TextIO, *, template: str = DEFAULT_TEMPLATE) -> None:
    """Write the sample's CSV to ``stream`` in one write (see module docstring)."""
    stream.write(render_csv_bytes(summary, template=template).decode("utf-8"))


def render_csv_bytes(summary: SampleSummary, *, template: str = DEFAULT_TEMPLATE) -> bytes:
    """The sample's CSV as UTF-8 bytes without BOM."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown CSV template {template!r}: choose one of {', '.join(TEMPLATES)}")
    chosen: Template = "labware-legacy" if template == "labware-legacy" else "labware"
    sample = clean_sample_number(summary.sample_number)
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(HEADER)
    for name, entry in _entries(summary, chosen):
        writer.writerow((sample, TEST_NUMBER, name, Figure(entry)))
    return buffer.getvalue().encode("utf-8")


def csv_filename(sample_number: str, when: datetime) -> str:
    """``<safe sample number>_<UTC yyyymmddThhmmss+millis>Z.csv``; never a path."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("csv_filename needs a timezone-aware time (UTC)")
    utc = when.astimezone(timezone.utc)
    stamp = f"{utc:%Y%m%dT%H%M%S}{utc.microsecond // 1000:03d}Z"
    return f"{safe_sample_number(sample_number)}_{stamp}.csv"
