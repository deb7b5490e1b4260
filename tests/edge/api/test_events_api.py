"""The event WebSocket: authentication and delivery of run events."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.edge.api.conftest import sign_in, upload_and_wait

pytestmark = pytest.mark.timeout(60)


def next_of_type(ws, wanted: str, limit: int = 50) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(limit):
        event = ws.receive_json()
        if event["type"] == wanted:
            return dict(event)
    raise AssertionError(f"no {wanted} event")


def test_run_created_reaches_a_connected_client(app: FastAPI) -> None:
    client = TestClient(app)
    sign_in(client)  # the cookie authenticates the socket, as on the kiosk
    with client.websocket_connect("/api/events") as ws:
        assert ws.receive_json()["type"] == "hello"
        run_id = upload_and_wait(client, "S-EV", seed=11)
        event = next_of_type(ws, "run.created")
        assert event["payload"]["run_id"] == run_id
        assert event["payload"]["sample_number"] == "S-EV"
        assert event["seq"] > 0 and event["at"]


def test_subprotocol_token_is_accepted_and_echoed(app: FastAPI) -> None:
    token = sign_in(TestClient(app))
    client = TestClient(app)  # no cookie
    with client.websocket_connect(
        "/api/events", subprotocols=["microplate.v1", f"bearer.{token}"]
    ) as ws:
        assert ws.accepted_subprotocol == "microplate.v1"
        assert ws.receive_json()["type"] == "hello"


def test_signing_out_closes_the_socket(app: FastAPI) -> None:
    app.state.limits = type(app.state.limits)(event_heartbeat_s=0.2)
    client = TestClient(app)
    token = sign_in(client)
    other = TestClient(app)
    with other.websocket_connect(f"/api/events?token={token}") as ws:
        assert ws.receive_json()["type"] == "hello"
        assert client.post("/api/auth/sign-out").status_code == 204
        with pytest.raises(WebSocketDisconnect) as err:
            ws.receive_json()
        assert err.value.code == 1008


def test_a_client_that_fell_behind_is_told_to_refetch() -> None:
    import anyio

    from edge.api.events import _forward
    from edge.events import EventBus

    class FakeSocket:
        def __init__(self) -> None:
            self.sent: list[dict] = []
            self.closed: int | None = None

        async def send_json(self, data: dict) -> None:
            self.sent.append(data)

        async def close(self, code: int, reason: str = "") -> None:
            self.closed = code

    bus = EventBus(subscriber_buffer=2)
    sub = bus.subscribe()
    for i in range(5):
        bus.publish("run.created", {"i": i})  # the socket is not reading yet: 3 are lost
    ws = FakeSocket()

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_forward, ws, sub, lambda: True, 5.0)
            await anyio.sleep(0.2)
            sub.close()

    anyio.run(scenario)
    kinds = [m["type"] for m in ws.sent]
    assert kinds == ["events.dropped", "run.created", "run.created"]
    assert ws.sent[0]["payload"] == {"count": 3}
    assert [m["payload"]["i"] for m in ws.sent[1:]] == [3, 4]
    assert ws.closed == 1001


def test_calibration_and_capture_progress_events(app: FastAPI) -> None:
    client = TestClient(app)
    sign_in(client, supervisor=True)
    with client.websocket_connect("/api/events") as ws:
        assert ws.receive_json()["type"] == "hello"
        proposal = client.post("/api/calibration/proposal").json()
        assert client.put("/api/calibration", json=proposal).status_code == 200
        event = next_of_type(ws, "calibration.updated")
        assert event["payload"]["grid_id"]
        res = client.post("/api/capture", json={"sample_number": "S-PROG"})
        assert res.status_code == 202
        progress = next_of_type(ws, "capture.progress")
        assert progress["payload"]["ticket_id"] == res.json()["id"]
