"""WebSocket push of new results and device status to the dashboards a user may see."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import ReleasingRoute, user_from_token
from cloud.crud.scope import Scope
from cloud.state import AppState

logger = logging.getLogger(__name__)
router = APIRouter(tags=["events"], route_class=ReleasingRoute)


def scope_for_token(state: AppState, token: str) -> Scope | None:
    """The site scope of a valid access token's user, or None (blocking: run in a thread)."""
    with state.sessions() as session:
        user = user_from_token(session, state.settings, token)
        return Scope.for_user(user) if user is not None else None


@router.websocket("/api/v1/ws")
async def events(websocket: WebSocket) -> None:
    """Send the access token as the first text message (not in the URL, which gets logged)."""
    state: AppState = websocket.app.state.microplate
    await websocket.accept()
    try:
        token = await asyncio.wait_for(websocket.receive_text(), timeout=10)
    except (asyncio.TimeoutError, WebSocketDisconnect):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    scope = await run_in_threadpool(scope_for_token, state, token.strip())
    if scope is None:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid token")
        return
    await relay_events(websocket, state, scope)


async def relay_events(websocket: WebSocket, state: AppState, scope: Scope) -> None:
    """Send an accepted socket every broadcast event its scope may see, until it disconnects
    (shared by the API's socket and the dashboard's cookie-authenticated one)."""
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
    """Read (and ignore) client messages so a disconnect is noticed promptly."""
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        return
