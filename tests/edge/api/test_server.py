"""The API under a real uvicorn on a free loopback port: HTTP, the MJPEG stream, the socket."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
import websockets

from edge.api.server import build_server
from edge.app import Appliance
from tests.edge.api.conftest import OPERATOR_SECRET, plate_jpeg

pytestmark = pytest.mark.timeout(60)

servers: dict[str, uvicorn.Server] = {}  # base url -> running server, for white-box checks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def base_url(appliance: Appliance) -> Iterator[str]:
    frame = np.zeros((120, 160, 3), dtype=np.uint8)
    cv2.rectangle(frame, (20, 20), (140, 100), (0, 200, 0), -1)
    appliance.intake.source.preview_frame = lambda: frame  # type: ignore[method-assign]
    port = free_port()
    server = build_server(appliance, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    servers[f"127.0.0.1:{port}"] = server
    try:
        yield f"127.0.0.1:{port}"
    finally:
        servers.pop(f"127.0.0.1:{port}", None)
        server.should_exit = True
        thread.join(10)


def test_health_sign_in_upload_over_real_http(base_url: str) -> None:
    with httpx.Client(base_url=f"http://{base_url}", timeout=20) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert "server" not in client.get("/health").headers
        assert client.get("/api/runs").status_code == 401
        token = client.post("/api/auth/sign-in", json={"secret": OPERATOR_SECRET}).json()["token"]
        files = {"file": ("p.jpg", plate_jpeg(21), "image/jpeg")}
        res = client.post("/api/runs", data={"sample_number": "S-HTTP"}, files=files)
        assert res.status_code == 202
        state = client.get(f"/api/tickets/{res.json()['id']}", params={"wait": 20}).json()
        assert state["state"] == "done"
        # The client kept the cookie; the bearer token works on its own as well.
        bare = httpx.get(
            f"http://{base_url}/api/runs", headers={"Authorization": f"Bearer {token}"}
        )
        assert bare.json()["total"] == 1


def test_mjpeg_stream_ends_when_the_client_leaves(base_url: str, appliance: Appliance) -> None:
    with httpx.Client(base_url=f"http://{base_url}", timeout=20) as client:
        client.post("/api/auth/sign-in", json={"secret": OPERATOR_SECRET})
        with client.stream("GET", "/api/capture/preview.mjpg") as res:  # endless stream
            assert res.headers["content-type"].startswith("multipart/x-mixed-replace")
            seen = b""
            for chunk in res.iter_bytes():
                seen += chunk
                if seen.count(b"--frame\r\n") >= 3:
                    break
        assert seen.count(b"Content-Type: image/jpeg") >= 3
        # The server noticed the disconnect and gave the stream's slot back (explicitly: the
        # staleness fallback only frees slots on a later acquire, never in `in_use`).
        slots = servers[base_url].config.app.state.preview_slots
        deadline = time.monotonic() + 10
        while slots.in_use and time.monotonic() < deadline:
            time.sleep(0.1)
        assert slots.in_use == 0


def test_event_socket_with_a_real_websocket_client(base_url: str) -> None:
    token = httpx.post(
        f"http://{base_url}/api/auth/sign-in", json={"secret": OPERATOR_SECRET}
    ).json()["token"]

    async def scenario() -> dict:
        url = f"ws://{base_url}/api/events"
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(url):
                pass
        async with websockets.connect(url, subprotocols=["microplate.v1", f"bearer.{token}"]) as ws:
            assert ws.subprotocol == "microplate.v1"
            assert json.loads(await ws.recv())["type"] == "hello"
            async with httpx.AsyncClient(base_url=f"http://{base_url}", timeout=20) as client:
                files = {"file": ("p.jpg", plate_jpeg(22), "image/jpeg")}
                res = await client.post(
                    "/api/runs",
                    data={"sample_number": "S-WS"},
                    files=files,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert res.status_code == 202
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if event["type"] == "run.created":
                    return dict(event)

    event = asyncio.run(scenario())
    assert event["payload"]["sample_number"] == "S-WS"


def test_systemd_hears_ready_then_watchdog_pings(
    appliance: Appliance, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Type=notify + WatchdogSec: READY=1 once listening, then WATCHDOG=1 every half interval."""
    sock_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    listener.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping every 0.1 s
    server = build_server(appliance, "127.0.0.1", free_port())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        messages = [listener.recv(256) for _ in range(4)]
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
    assert messages[0] == b"READY=1"
    assert messages[1:] == [b"WATCHDOG=1"] * 3


def test_watchdog_interval_follows_systemd_rules() -> None:
    from edge.api.server import watchdog_interval

    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
