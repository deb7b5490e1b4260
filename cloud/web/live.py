"""Live updates for the pages: the cloud's event stream, authenticated by the session cookie.

The API's own WebSocket (`/api/v1/ws`) wants the access token as its first message, which
page script cannot read from an HttpOnly cookie. This endpoint takes the cookie instead,
checks the Origin (cross-site WebSocket hijacking), and then relays the same broadcaster
with the same per-user `Scope`, so a page only hears about sites its user may see.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import user_from_token
from cloud.crud.scope import Scope
from cloud.state import AppState
from cloud.web.session import ACCESS_COOKIE

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ui")


def _scope(state: AppState, token: str) -> Scope | None:
    with state.sessions() as session:
        user = user_from_token(session, state.settings, token)
        return Scope.for_user(user) if user is not None else None


@router.websocket("/events")
async def events(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.microplate
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    token = websocket.cookies.get(ACCESS_COOKIE)
    if origin is None or host is None or origin.split("://", 1)[-1] != host or not token:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    scope = await run_in_threadpool(_scope, state, token)
    if scope is None:
        # The script refreshes the cookies through /ui/ping and reconnects.
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    await websocket.accept()
    sub = state.broadcaster.subscribe(scope)
    await websocket.send_json({"type": "hello"})
    receiver = asyncio.create_task(_drain(websocket))
    try:
        while not receiver.done():
            getter = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await websocket.send_json(getter.result())
            else:
                getter.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        receiver.cancel()
        state.broadcaster.unsubscribe(sub)


async def _drain(websocket: WebSocket) -> None:
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        return
