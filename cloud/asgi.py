"""ASGI entry point for multi-worker uvicorn: `uvicorn cloud.asgi:app`."""

from __future__ import annotations

from cloud.app import create_app
from cloud.logs import configure_logging
from cloud.settings import load_settings

_settings = load_settings()
configure_logging(_settings.log_level, json_lines=_settings.log_json)
app = create_app(_settings)
