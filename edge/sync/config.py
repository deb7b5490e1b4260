"""Applies the cloud's desired configuration (retained `config` topic) within a whitelist.

Only runtime settings named in `SyncSettings.config_whitelist` change; anything else in the
message is reported as ignored. A revision is applied once: the last one seen is kept in a
small JSON file beside the database, so the retained message delivered again at every
reconnect changes nothing. A revision the appliance refuses (a value out of range) is recorded
with its error and not retried; the cloud sends a new revision to fix it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.wire import DesiredConfig
from edge.errors import ApplianceError

logger = logging.getLogger(__name__)

Apply = Callable[[dict[str, Any]], object]


def config_patch(
    config: DesiredConfig, whitelist: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """(runtime settings patch, fields ignored because they are not whitelisted)."""
    allowed = set(whitelist)
    patch: dict[str, Any] = {}
    ignored: list[str] = []

    def take(name: str, values: dict[str, Any]) -> None:
        if name in allowed:
            patch.update(values)
        else:
            ignored.append(name)

    if config.min_confidence is not None:
        take("min_confidence", {"min_confidence": config.min_confidence})
    if config.dilution is not None:
        take(
            "dilution",
            {
                "start_dilution": config.dilution.start_dilution,
                "dilution_factor": config.dilution.factor,
                "control_columns": list(config.dilution.control_columns),
            },
        )
    if config.protective_titre is not None:
        take("protective_titre", {"protective_titre": round(config.protective_titre)})
    if config.csv_template is not None:
        take("csv_template", {"csv_template": config.csv_template})
    if config.policy is not None:
        ignored.append("policy")  # the counting policy is fixed on the appliance
    return patch, ignored


class ConfigApplier:
    def __init__(self, *, apply: Apply, state_path: Path, whitelist: Iterable[str]) -> None:
        self._apply = apply
        self.state_path = state_path
        self.whitelist = tuple(whitelist)
        self.state: dict[str, Any] = self._load()

    @property
    def revision(self) -> int | None:
        rev = self.state.get("revision")
        return rev if isinstance(rev, int) else None

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("config state %s unreadable (%s); starting afresh", self.state_path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".sync-config.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @property
    def upload_raw(self) -> bool | None:
        """The cloud's last applied `upload_raw` (None: never set; the local setting rules)."""
        value = self.state.get("upload_raw")
        return value if isinstance(value, bool) else None

    def upload_kinds(self, local: Iterable[str]) -> tuple[str, ...]:
        """The image kinds to upload: the local `sync.upload_images` with "raw" added or
        removed as the cloud's `upload_raw` says."""
        kinds = [k for k in local if k != "raw"]
        raw = self.upload_raw
        if raw is True or (raw is None and "raw" in local):
            kinds.append("raw")
        return tuple(kinds)

    def apply(self, config: DesiredConfig) -> bool:
        """Apply `config` if it is newer than the last revision seen; True when applied."""
        current = self.revision
        if current is not None and config.revision <= current:
            logger.debug("config revision %s already seen (at %s)", config.revision, current)
            return False
        patch, ignored = config_patch(config, self.whitelist)
        kept_raw = upload_raw = self.upload_raw  # kept across revisions that do not mention it
        applied_here: list[str] = []
        if config.upload_raw is not None:
            if "upload_raw" in self.whitelist:
                upload_raw = config.upload_raw
                applied_here.append("upload_raw")
            else:
                ignored.append("upload_raw")
        error = None
        if patch:
            try:
                self._apply(patch)
            except (ValueError, LookupError, ApplianceError) as exc:
                # ValueError covers a pydantic ValidationError of the settings patch.
                error = str(exc)[:500]
                logger.warning("config revision %s refused: %s", config.revision, error)
        self.state = {
            "revision": config.revision,
            "issued_at": config.issued_at.isoformat(),
            "received_at": datetime.now(timezone.utc).isoformat(),
            "applied": sorted([*patch, *applied_here]) if error is None else [],
            "ignored": ignored,
            "error": error,
        }
        raw = upload_raw if error is None else kept_raw
        if raw is not None:
            self.state["upload_raw"] = raw
        self._save()
        if error is None:
            logger.info(
                "config revision %s applied: %s (ignored: %s)",
                config.revision,
                sorted([*patch, *applied_here]) or "nothing",
                ignored or "nothing",
            )
        return error is None and bool(patch or applied_here)
