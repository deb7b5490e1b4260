"""Live updates for the pages: the cloud's event stream, authenticated by the session cookie.

The API's own WebSocket (`/api/v1/ws`) wants the access token as its first message, which
page script cannot read from an HttpOnly cookie. This endpoint takes the cookie instead,
checks the Origin (cross-site WebSocket hijacking), and then relays the same broadcaster
with the same per-user `Scope`, so a page only hears about sites its user may see.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, status
from starlette.concurrency import run_in_threadpool

from cloud.api.ws import relay_events, scope_for_token
from cloud.state import AppState
from cloud.web.session import ACCESS_COOKIE

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ui")


@router.websocket("/events")
async def events(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.microplate
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    token = websocket.cookies.get(ACCESS_COOKIE)
    if origin is None or host is None or origin.split("://", 1)[-1] != host or not token:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    scope = await run_in_threadpool(scope_for_token, state, token)
    if scope is None:
        # The script refreshes the cookies through /ui/ping and reconnects.
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    await websocket.accept()
    await relay_events(websocket, state, scope)
