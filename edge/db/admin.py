"""Administrative rows: the audit log, the runtime settings a supervisor changes, and the
calibration history."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from edge.db.store import iso


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def audit(db: Database, *, actor: str, action: str, detail: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO audit (at, actor, action, detail) VALUES (?,?,?,?)",
        [iso(), actor[:128], action[:128], _dumps(detail)],
    )


def runtime_settings(db: Database) -> dict[str, Any]:
    """The runtime settings a supervisor has changed, decoded (key -> value)."""
    rows = db.execute("SELECT key, value FROM runtime_settings").fetchall()
    return {str(key): json.loads(value) for key, value in rows}


def save_runtime_settings(db: Database, values: dict[str, Any], actor: str) -> None:
    """Store these runtime settings (each replaces its earlier value); inside `Store.write()`."""
    at = iso()
    db.table("runtime_settings").upsert_all(
        [
            {"key": key, "value": json.dumps(value), "updated_at": at, "updated_by": actor}
            for key, value in values.items()
        ],
        pk="key",
    )


def record_calibration(
    db: Database, grid_id: str | None, grid_json: str | None, actor: str
) -> None:
    db.execute(
        "INSERT INTO calibration_history (grid_id, grid, updated_at, updated_by) VALUES (?,?,?,?)",
        [grid_id, grid_json, iso(), actor],
    )


def calibration_change(db: Database, grid_id: str) -> tuple[str, str] | None:
    """When and by whom this grid was last set: (updated_at, updated_by), or None."""
    row = db.execute(
        "SELECT updated_at, updated_by FROM calibration_history WHERE grid_id = ? "
        "ORDER BY id DESC LIMIT 1",
        [grid_id],
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None
