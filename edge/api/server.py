"""Run the API with uvicorn: ``serve(appliance, host, port)`` (the CLI's ``serve`` calls it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

import uvicorn

from edge.api import create_app
from edge.app import Appliance
from edge.ui import mount_ui

logger = logging.getLogger(__name__)


def watchdog_interval(environ: dict[str, str] | os._Environ[str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of systemd's WatchdogSec, or None when the unit
    sets no watchdog (or it is meant for another process, per sd_watchdog_enabled(3))."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class _Server(uvicorn.Server):
    """Tells systemd (Type=notify units) the API is listening, once it really is, and keeps
    its watchdog fed from the event loop, so a wedged loop gets the appliance restarted."""

    _watchdog: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            notifier = sdnotify.SystemdNotifier()
            notifier.notify("READY=1")
            interval = watchdog_interval()
            if interval:
                self._watchdog = asyncio.create_task(self._feed_watchdog(notifier, interval))

    async def _feed_watchdog(self, notifier: object, interval: float) -> None:
        while True:
            notifier.notify("WATCHDOG=1")  # type: ignore[attr-defined]
            await asyncio.sleep(interval)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await super().shutdown(sockets)


def build_server(appliance: Appliance, host: str = "127.0.0.1", port: int = 8080) -> uvicorn.Server:
    """The uvicorn server for the appliance's API (not yet running)."""
    app = create_app(appliance)
    mount_ui(app, appliance)  # the touchscreen pages (edge/ui), on top of the JSON API
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
