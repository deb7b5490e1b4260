"""PostgreSQL COPY text format, written by hand because it is the ingest's hot loop.

psycopg's `Copy.write_row` adapts every value through its dumpers (arrays especially), which
costs more than the database's own work for 96 wells per plate. Here each row becomes one
tab-separated line and a whole batch goes out in one `Copy.write`. The escaping follows the
COPY text format (backslash, tab, newline, carriage return) and array literals quote every
element, so no value can break out of its field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def field(value: Any) -> str:
    """One value in COPY text format (`\\N` for NULL)."""
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return array(value).translate(COPY_ESCAPES)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")).translate(COPY_ESCAPES)
    return str(value).translate(COPY_ESCAPES)


def array(values: Iterable[Any]) -> str:
    """A Postgres array literal with every element quoted (numbers bare)."""
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(repr(v))
        else:
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'"{s}"')
    return "{" + ",".join(parts) + "}"


def line(values: Iterable[Any]) -> str:
    return "\t".join(field(v) for v in values) + "\n"
