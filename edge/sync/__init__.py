"""Sync over MQTT: the outbox drain, image uploads and the cloud's desired config.

Wiring (in `Appliance.start()`, after the store is open): ::

    from edge.sync import build_sync_worker
    self.sync = build_sync_worker(self)   # None when settings.sync is absent or disabled
    if self.sync is not None:
        self.sync.start()                 # and self.sync.stop() first thing in stop()

`EdgeSettings` gets one field: ``sync: SyncSettings | None = None``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import SyncSettings
from edge.sync.config import ConfigApplier
from edge.sync.uploader import ImageUploader
from edge.sync.worker import SyncWorker

if TYPE_CHECKING:
    from edge.ports import SyncHost

logger = logging.getLogger(__name__)

__all__ = ["ConfigApplier", "ImageUploader", "SyncSettings", "SyncWorker", "build_sync_worker"]


def build_sync_worker(app: SyncHost) -> SyncWorker | None:
    """A SyncWorker wired to the appliance's store, events, status and runtime settings."""
    settings: SyncSettings | None = getattr(app.settings, "sync", None)
    if settings is None or not settings.enabled:
        return None
    from edge.errors import ApplianceError
    from edge.schemas import RuntimeSettingsPatch

    def status_info() -> dict[str, Any]:
        st = app.status()
        return {
            "version": st.version,
            "model": f"{st.model.name} {st.model.version}".strip(),
            "backend": st.model.backend,
            "disk_free_bytes": st.disk.free_bytes,
        }

    def image_paths(run_id: str) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for kind in settings.upload_images:
            try:
                paths[kind] = app.run_image(run_id, kind)  # type: ignore[arg-type]
            except ApplianceError:
                continue  # deleted by retention or never written: nothing to upload
        return paths

    uploader = None
    if settings.api_base_url and settings.upload_images:
        uploader = ImageUploader(settings, image_paths=image_paths)
    applier = ConfigApplier(
        apply=lambda patch: app.update_runtime_settings(RuntimeSettingsPatch(**patch), "cloud"),
        state_path=app.settings.data_dir / "sync-config.json",
        whitelist=settings.config_whitelist,
    )
    return SyncWorker(
        settings,
        store=app.store,
        site_id=app.settings.site_id,
        device_id=app.settings.device_id,
        events=app.events,
        status_info=status_info,
        config_applier=applier,
        uploader=uploader,
        data_dir=app.settings.data_dir,
    )
