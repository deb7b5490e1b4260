"""Run the API with uvicorn: ``serve(appliance, host, port)`` (the CLI's ``serve`` calls it)."""

from __future__ import annotations

import logging

import uvicorn

from edge.api import create_app
from edge.app import Appliance

logger = logging.getLogger(__name__)


def serve(appliance: Appliance, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until SIGINT/SIGTERM. Loopback by default: exposing the appliance on the LAN is
    an explicit decision (``http.host`` in the settings).

    The caller owns the appliance's start/stop; this only runs the web server.
    """
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
    )
    logger.info("Serving the appliance API on http://%s:%d", host, port)
    uvicorn.Server(config).run()
