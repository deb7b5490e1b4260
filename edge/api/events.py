"""The event WebSocket: run created/updated/deleted, capture progress, sync status, ...

Authentication happens before the handshake is accepted: the session cookie (kiosk pages),
a ``token`` query parameter, or a ``bearer.<token>`` subprotocol (browsers cannot set headers
on a WebSocket). Without a valid session the handshake is refused (HTTP 403, close 1008).
The session is re-checked on every event and every heartbeat, so signing out closes the socket.

Messages are JSON: ``{"seq", "type", "payload", "at"}``; the first one is ``{"type": "hello"}``
and is sent once the subscription exists (events published after it are never missed). A client
too slow to keep up gets ``{"type": "events.dropped", "payload": {"count"}}`` and should re-fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from edge.api.deps import SESSION_COOKIE, get_authenticator, same_origin
from edge.app import Appliance
from edge.events import Subscription

logger = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

SUBPROTOCOL = "microplate.v1"
BEARER_PREFIX = "bearer."
CLOSE_POLICY = 1008  # RFC 6455 policy violation: used for "not (or no longer) signed in"


def _credentials(ws: WebSocket) -> tuple[str | None, str | None]:
    """The token and the subprotocol to answer with."""
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    offered = [p for p in offered if p]
    from_protocol = next(
        (p[len(BEARER_PREFIX) :] for p in offered if p.startswith(BEARER_PREFIX)), None
    )
    # A browser fails the socket when it offered subprotocols and none is echoed back.
    if SUBPROTOCOL in offered:
        chosen: str | None = SUBPROTOCOL
    else:
        chosen = next((p for p in offered if p.startswith(BEARER_PREFIX)), None)
    token = ws.query_params.get("token") or from_protocol or ws.cookies.get(SESSION_COOKIE)
    return token, chosen


def _notice(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A message from the socket itself (not the bus): seq 0."""
    return {
        "seq": 0,
        "type": kind,
        "payload": payload,
        "at": datetime.now(timezone.utc).isoformat(),
    }


@router.websocket("/api/events")
async def events(ws: WebSocket) -> None:
    auth = get_authenticator(ws)
    token, subprotocol = _credentials(ws)
    session = auth.session_for(token) if token else None
    if session is None or (token == ws.cookies.get(SESSION_COOKIE) and not same_origin(ws)):
        await ws.close(code=CLOSE_POLICY)
        return
    appliance: Appliance = ws.app.state.appliance
    heartbeat: float = ws.app.state.limits.event_heartbeat_s
    subscription = appliance.events.subscribe()
    try:
        await ws.accept(subprotocol=subprotocol)
        await ws.send_json(_notice("hello", {"session_id": session.id, "role": session.role}))
        # Both tasks handle their own exceptions: anyio would wrap an escaping one in an
        # ExceptionGroup, which Python 3.10 cannot catch selectively.
        async with anyio.create_task_group() as tg:

            async def drain_client() -> None:
                # Clients need not send anything; reading is how a disconnect is noticed.
                try:
                    while (await ws.receive())["type"] != "websocket.disconnect":
                        pass
                except (WebSocketDisconnect, RuntimeError):
                    pass
                tg.cancel_scope.cancel()

            async def forward() -> None:
                await _forward(
                    ws, subscription, lambda: auth.session_for(token or "") is not None, heartbeat
                )
                tg.cancel_scope.cancel()

            tg.start_soon(drain_client)
            tg.start_soon(forward)
    except (WebSocketDisconnect, RuntimeError):
        logger.debug("event client went away during the handshake")
    finally:
        subscription.close()


async def _forward(
    ws: WebSocket, subscription: Subscription, signed_in: Callable[[], bool], heartbeat: float
) -> None:
    dropped = 0
    try:
        while True:
            event = None
            with anyio.move_on_after(heartbeat):
                try:
                    event = await subscription.__anext__()
                except StopAsyncIteration:
                    await ws.close(code=1001, reason="appliance stopping")
                    return
            if not signed_in():
                await ws.close(code=CLOSE_POLICY, reason="session ended")
                return
            if subscription.dropped > dropped:
                # This client fell behind and lost events: tell it to re-fetch what it shows.
                lost, dropped = subscription.dropped - dropped, subscription.dropped
                await ws.send_json(_notice("events.dropped", {"count": lost}))
            if event is not None:
                await ws.send_json(event.model_dump(mode="json"))
    except (WebSocketDisconnect, RuntimeError):
        logger.debug("event client went away")
