"""The one CSV writer of the product (appliance and cloud): no field a spreadsheet would run.

A text field starting with ``=``, ``+``, ``-``, ``@``, tab or CR (or the full-width forms some
spreadsheet locales also evaluate) is prefixed with ``'`` (OWASP's advice), so a LIMS clerk
opening the file in a spreadsheet never runs a formula that came from a device or a user (a
run's flags, a sample number, a site name). Numbers we computed are written as numbers: pass
``int``/``float`` values, or :class:`Figure` for preformatted ones (``"-1.0000"``); a Figure
that is not a plain decimal number is neutralised like any text.

Every CSV the product writes goes through :func:`csv_writer` (``core.labware`` for the
LabWare files on the share and the cloud's export, ``cloud.web.pages`` for the sample list).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterable
from typing import Any, TextIO

logger = logging.getLogger(__name__)

__all__ = ["FORMULA_STARTS", "Figure", "SafeCsvWriter", "csv_writer", "neutralise"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class Figure(str):
    """A number we formatted ourselves (``"5.80"``, ``"-1.0000"``): written as is."""

    __slots__ = ()


def neutralise(field: str) -> str:
    """``field`` prefixed with ``'`` if a spreadsheet would read it as a formula."""
    if field.startswith(FORMULA_STARTS):
        return "'" + field
    return field


def _one_line_ending(text: str) -> str:
    # The csv module quotes a field holding "\n" (our line end) but not a bare "\r", which
    # readers then take for the end of the row: make every line break inside a cell "\n".
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _cell(value: Any) -> Any:
    if isinstance(value, Figure):
        return str(value) if (not value or _NUMBER.fullmatch(value)) else neutralise(value)
    if isinstance(value, str):
        return _one_line_ending(neutralise(value))
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ""
    return _one_line_ending(neutralise(str(value)))


class SafeCsvWriter:
    """``csv.writer`` with every cell neutralised (``\\n`` line ends, RFC 4180 quoting)."""

    def __init__(self, stream: TextIO) -> None:
        self._writer = csv.writer(stream, lineterminator="\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(stream: TextIO) -> SafeCsvWriter:
    return SafeCsvWriter(stream)
