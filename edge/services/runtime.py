"""Settings a supervisor may change at runtime, stored in `runtime_settings` (one row per key)
over the defaults in `EdgeSettings.runtime`."""

from __future__ import annotations

import logging
import threading
from typing import Any

from edge.config import EdgeSettings
from edge.db import admin
from edge.db.store import Store
from edge.schemas import RuntimeSettings, RuntimeSettingsPatch

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
    for key, value in admin.runtime_settings(store.read()).items():
        if key in base:
            base[key] = value
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
        admin.save_runtime_settings(db, {key: values[key] for key in changed}, actor)
        admin.audit(
            db, actor=actor, action="settings.update", detail={k: values[k] for k in changed}
        )


class RuntimeSettingsService:
    """The runtime settings in force: loaded when the store opens, changed by a supervisor (or
    the cloud's desired config), each change stored and audited."""

    def __init__(self, settings: EdgeSettings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self._current = defaults(settings)
        # Serialises changes only. Readers take no lock: `_current` is never changed in place,
        # only replaced in one assignment. A plate's commit reads the settings while it holds the
        # store's write lock, and a change holds this lock while it waits for that write lock,
        # so a reader that took this lock could deadlock with a change.
        self._update_lock = threading.Lock()

    def load(self) -> None:
        with self._update_lock:
            self._current = load(self._store, self._settings)

    def get(self) -> RuntimeSettings:
        return self._current

    def update(self, patch: RuntimeSettingsPatch, actor: str) -> RuntimeSettings:
        with self._update_lock:
            new = apply(self._current, patch)
            save(self._store, new, patch, actor)
            self._current = new
        return new
