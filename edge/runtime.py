"""Settings a supervisor may change at runtime, stored in `runtime_settings` (one row per key)
over the defaults in `EdgeSettings.runtime`."""

from __future__ import annotations

import json
import logging
from typing import Any

from edge import repo
from edge.config import EdgeSettings
from edge.schemas import RuntimeSettings, RuntimeSettingsPatch
from edge.store import Store, iso

logger = logging.getLogger(__name__)


def defaults(settings: EdgeSettings) -> RuntimeSettings:
    r = settings.runtime
    return RuntimeSettings(
        csv_template=r.csv_template,
        start_dilution=r.dilution.start_dilution,
        dilution_factor=r.dilution.factor,
        control_columns=list(r.dilution.control_columns),
        min_confidence=r.min_confidence,
        protective_titre=r.protective_titre,
        language=r.language,
        reading=r.reading,
        well_threshold=r.well_threshold,
    )


def load(store: Store, settings: EdgeSettings) -> RuntimeSettings:
    base = defaults(settings).model_dump()
    for key, value in store.read().execute("SELECT key, value FROM runtime_settings").fetchall():
        if key in base:
            base[key] = json.loads(value)
    try:
        return RuntimeSettings.model_validate(base)
    except ValueError:
        logger.warning("stored runtime settings are invalid; using the configured defaults")
        return defaults(settings)


def apply(current: RuntimeSettings, patch: RuntimeSettingsPatch) -> RuntimeSettings:
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    merged = {**current.model_dump(), **changes}
    return RuntimeSettings.model_validate(merged)


def save(store: Store, new: RuntimeSettings, patch: RuntimeSettingsPatch, actor: str) -> None:
    changed = patch.model_dump(exclude_unset=True)
    values = new.model_dump()
    with store.write() as db:
        for key in changed:
            db.execute(
                "INSERT INTO runtime_settings (key, value, updated_at, updated_by) "
                "VALUES (?,?,?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
                "updated_at=excluded.updated_at, updated_by=excluded.updated_by",
                [key, json.dumps(values[key]), iso(), actor],
            )
        repo.audit(
            db, actor=actor, action="settings.update", detail={k: values[k] for k in changed}
        )
