"""Run the API with uvicorn: ``serve(appliance, host, port)`` (the CLI's ``serve`` calls it)."""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from edge.api import create_app
from edge.app import Appliance

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Tells systemd (Type=notify units) the API is listening, once it really is."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            sdnotify.SystemdNotifier().notify("READY=1")


def build_server(appliance: Appliance, host: str = "127.0.0.1", port: int = 8080) -> uvicorn.Server:
    """The uvicorn server for the appliance's API (not yet running)."""
    app = create_app(appliance)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # uvicorn's access log prints query strings, where the event socket's token may sit;
        # edge.api.middleware logs requests without them instead.
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        ws_max_size=64 * 1024,  # clients send nothing but pings on the event socket
    )
    return _Server(config)


def serve(appliance: Appliance, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until SIGINT/SIGTERM. Loopback by default: exposing the appliance on the LAN is
    an explicit decision (``http.host`` in the settings).

    The caller owns the appliance's lifecycle: ``appliance.start()`` before, ``stop()`` after
    (so the CLI can report a start failure as a clear message before any port is opened).
    Raises ``edge.auth.AuthConfigError`` when production mode lacks proper credentials.
    """
    server = build_server(appliance, host, port)
    logger.info("Serving the appliance API on http://%s:%d", host, port)
    server.run()
