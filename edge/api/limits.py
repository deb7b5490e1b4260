"""Limits of the HTTP API, taken from ``EdgeSettings`` where a site may tune them."""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import EdgeSettings


@dataclass(frozen=True)
class ApiLimits:
    max_upload_bytes: int = 40 * 1024 * 1024  # a plate image upload
    max_body_bytes: int = 256 * 1024  # any other request body (JSON)
    preview_max_fps: float = 2.0  # one MJPEG preview stream
    preview_max_streams: int = 2  # more concurrent streams get 503: inference comes first
    ticket_wait_max_s: float = 30.0
    event_heartbeat_s: float = 20.0  # idle time after which an event socket is re-checked

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> ApiLimits:
        return cls(
            max_upload_bytes=settings.http.max_upload_mb * 1024 * 1024,
            preview_max_fps=settings.preview_max_fps,
        )
