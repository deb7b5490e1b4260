"""Sync over MQTT: the outbox drain, image uploads and the cloud's desired config.

The package knows the outbox only through `edge.ports.OutboxPort` and the rest of the appliance
only through the callables `build_sync_worker` takes; `edge.app` wires it after the store is
open, starts it last and stops it first. `EdgeSettings.sync` (`edge.config.SyncSettings`) is its
configuration: absent or disabled, nothing here is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import EdgeSettings, SyncSettings
from edge.sync.config import ConfigApplier
from edge.sync.uploader import ImageUploader
from edge.sync.worker import SyncWorker

if TYPE_CHECKING:
    from edge.ports import ImageKind, OutboxPort
    from edge.schemas import ApplianceStatus, RuntimeSettingsPatch
    from edge.sync.worker import EventSink

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigApplier",
    "ImageUploader",
    "SyncSettings",
    "SyncWorker",
    "build_model_api",
    "build_sync_worker",
]


def build_sync_worker(
    edge_settings: EdgeSettings,
    outbox: OutboxPort,
    *,
    events: EventSink,
    status: Callable[[], ApplianceStatus],
    run_image: Callable[[str, ImageKind], Path],
    update_runtime: Callable[[RuntimeSettingsPatch, str], object],
    on_model: Callable[[bytes], None] | None = None,
) -> SyncWorker | None:
    """A SyncWorker wired to the outbox, the event bus, the status, the run images and the
    runtime settings (and, with `on_model`, the device's model notices); None when sync is not
    configured or disabled."""
    settings = edge_settings.sync
    if settings is None or not settings.enabled:
        return None
    from edge.errors import ApplianceError
    from edge.schemas import RuntimeSettingsPatch

    def status_info() -> dict[str, Any]:
        st = status()
        # The model that calls the wells: the classifier (which model updates replace) when
        # there is one, else the detector.
        reader = st.classifier or {"name": st.model.name, "version": st.model.version}
        return {
            "version": st.version,
            "model": f"{reader.get('name', '')} {reader.get('version', '')}".strip(),
            "backend": st.model.backend,
            "disk_free_bytes": st.disk.free_bytes,
        }

    applier = ConfigApplier(
        apply=lambda patch: update_runtime(RuntimeSettingsPatch(**patch), "cloud"),
        state_path=edge_settings.data_dir / "sync-config.json",
        whitelist=settings.config_whitelist,
    )

    def upload_kinds() -> tuple[str, ...]:
        return applier.upload_kinds(settings.upload_images)

    def image_paths(run_id: str) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for kind in upload_kinds():
            try:
                paths[kind] = run_image(run_id, kind)  # type: ignore[arg-type]
            except ApplianceError:
                continue  # deleted by retention or never written: nothing to upload
        return paths

    uploader = None
    # An empty `upload_images` turns image uploads off, raw ones included.
    if settings.api_base_url and settings.upload_images:
        uploader = ImageUploader(settings, image_paths=image_paths, kinds=upload_kinds)
    return SyncWorker(
        settings,
        outbox=outbox,
        site_id=edge_settings.site_id,
        device_id=edge_settings.device_id,
        events=events,
        status_info=status_info,
        config_applier=applier,
        uploader=uploader,
        data_dir=edge_settings.data_dir,
        on_model=on_model,
    )


def build_model_api(edge_settings: EdgeSettings) -> Any:
    """The cloud's model API client (`edge.sync.model_api.ModelApi`) for the OTA service;
    None without `sync.api_base_url` and a device token."""
    settings = edge_settings.sync
    if settings is None or not settings.enabled or not settings.api_base_url:
        return None
    token = settings.api_token()
    if not token:
        return None
    from edge.sync.model_api import ModelApi

    return ModelApi(settings.api_base_url, token, timeout_s=edge_settings.ota.download_timeout_s)
