"""provision-device -> bundle -> `microplate-edge enroll` -> `serve` with that config ->
capture -> the run and its images in the cloud API, against a real Mosquitto on the cloud's
generated password/ACL files, Postgres and SeaweedFS. And the same path with an identity that
does not match the credentials: the appliance says why nothing arrives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.path.conftest import Stack
from tests.e2e.path.stack import Appliance, cloud_cli

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.s3, pytest.mark.slow]

VISIBLE_WITHIN_S = 5.0  # issue 19: the run and its images in the cloud API within 5 s


def provision(stack: Stack, device: str) -> Path:
    bundle = stack.tmp / f"{device}.json"
    made = cloud_cli(
        stack.settings, "provision-device", "--site", "lab-path", "--site-name", "Lab path",
        "--device", device, "--output", str(bundle),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return bundle


def test_provision_enroll_serve_capture_reaches_the_cloud(stack: Stack, tmp_path: Path) -> None:
    bundle = provision(stack, "reader-1")
    edge = Appliance(tmp_path / "edge")
    edge.home.mkdir()
    edge.write_base_config()
    enrolled = edge.cli("enroll", str(bundle))
    assert enrolled.returncode == 0, enrolled.stderr
    config = json.loads(edge.config.read_text())
    assert (config["site_id"], config["device_id"]) == ("lab-path", "reader-1")
    first_line = edge.serve()
    assert edge.url in first_line  # serve prints its URL
    try:
        with edge.session() as client:
            run_id = edge.capture(client, "PATH-001")
            committed = time.monotonic()
            admin = {"Authorization": f"Bearer {stack.api.admin_token()}"}
            body: dict[str, object] = {}
            while time.monotonic() - committed < 60:
                resp = httpx.get(f"{stack.api.url}/api/v1/runs/{run_id}", headers=admin)
                if resp.status_code == 200:
                    body = resp.json()
                    if {"annotated", "thumbnail"} <= set(body.get("images") or []):  # type: ignore[call-overload]
                        break
                time.sleep(0.1)
            took = time.monotonic() - committed
            print(f"\nrun {run_id} with its images in the cloud API {took:.2f} s after commit")
            assert body, "the run never reached the cloud"
            assert took <= VISIBLE_WITHIN_S, f"took {took:.1f} s"
            assert body["sample_number"] == "PATH-001"
            # The image behind the cloud's presigned URL is the appliance's own.
            link = httpx.get(f"{stack.api.url}/api/v1/runs/{run_id}/image", headers=admin).json()
            stored = httpx.get(link["url"])
            assert stored.status_code == 200
            local = client.get(f"/api/runs/{run_id}/images/annotated")
            assert stored.content == local.content and stored.content[:2] == b"\xff\xd8"
            status = client.get("/api/status").json()["sync"]
            assert status["reason"] == "ok" and status["connected"] is True
            # The reason travels in the retained status the cloud keeps for the device.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                found = httpx.get(f"{stack.api.url}/api/v1/devices", headers=admin).json()
                mine = [d for d in found if d["mqtt_username"] == "lab-path.reader-1"]
                if mine and (mine[0]["last_status"] or {}).get("sync_reason") == "ok":
                    break
                time.sleep(0.2)
            assert mine and mine[0]["last_status"]["sync_reason"] == "ok", mine
    finally:
        edge.stop()


def test_a_mismatched_identity_says_why(stack: Stack, tmp_path: Path) -> None:
    bundle = provision(stack, "reader-2")
    edge = Appliance(tmp_path / "edge")
    edge.home.mkdir()
    edge.write_base_config()
    assert edge.cli("enroll", str(bundle)).returncode == 0
    # Someone edits the device id by hand (or copies a config from another appliance).
    config = json.loads(edge.config.read_text())
    config["device_id"] = "reader-9"
    edge.config.write_text(json.dumps(config), encoding="utf-8")
    edge.serve()
    try:
        with edge.session() as client:
            edge.capture(client, "PATH-002")
            deadline = time.monotonic() + 30
            sync: dict[str, object] = {}
            while time.monotonic() < deadline:
                sync = client.get("/api/status").json()["sync"]
                if sync.get("reason") == "identity_mismatch":
                    break
                time.sleep(0.2)
            assert sync.get("reason") == "identity_mismatch", sync
            message = str(sync["message"])
            assert "lab-path/reader-9" in message and "lab-path.reader-2" in message
            assert "microplate-edge enroll" in message
            assert int(sync["backlog"]) == 1  # nothing was delivered, nothing was lost
        status_page_says(edge, message)
    finally:
        edge.stop()
    log = (edge.home / "serve.log").read_text()
    assert "identity_mismatch" in log  # said at start, in the log


def test_a_revoked_device_is_told_so(stack: Stack, tmp_path: Path) -> None:
    bundle = provision(stack, "reader-3")
    edge = Appliance(tmp_path / "edge")
    edge.home.mkdir()
    edge.write_base_config()
    assert edge.cli("enroll", str(bundle)).returncode == 0
    device_id = json.loads(bundle.read_text())["device_id"]
    edge.serve()
    try:
        with edge.session() as client:
            wait_reason(client, "ok")
            admin = {"Authorization": f"Bearer {stack.api.admin_token()}"}
            revoked = httpx.post(
                f"{stack.api.url}/api/v1/devices/{device_id}/revoke", headers=admin
            )
            assert revoked.status_code == 200
            # The broker drops the account (files rewritten, SIGHUP); the appliance's next
            # connect is refused and the device API refuses its token: it says revoked.
            sync = wait_reason(client, "device_revoked", timeout=60)
            assert "revoked" in str(sync["message"]) and "provision" in str(sync["message"])
    finally:
        edge.stop()


def wait_reason(client: httpx.Client, code: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    sync: dict[str, object] = {}
    while time.monotonic() < deadline:
        sync = client.get("/api/status").json()["sync"]
        if sync.get("reason") == code:
            return sync
        time.sleep(0.2)
    raise AssertionError(f"sync reason stayed {sync.get('reason')!r}, expected {code!r}: {sync}")


def test_a_refused_upload_token_is_named(stack: Stack, tmp_path: Path) -> None:
    bundle = provision(stack, "reader-4")
    edge = Appliance(tmp_path / "edge")
    edge.home.mkdir()
    edge.write_base_config()
    assert edge.cli("enroll", str(bundle)).returncode == 0
    # A token the cloud does not know (as an expired or rotated one would be).
    (edge.home / "credentials" / "device-token").write_text("mpd_" + "0" * 32 + "_nope")
    edge.serve()
    try:
        with edge.session() as client:
            edge.capture(client, "PATH-004")
            sync = wait_reason(client, "upload_unauthorised")
            assert "token for image uploads" in str(sync["message"])
            assert sync["connected"] is True
    finally:
        edge.stop()


def status_page_says(edge: Appliance, message: str) -> None:
    """The touchscreen's Status page shows the sentence (Chromium, 800x480)."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 800, "height": 480})
            page.request.post(f"{edge.url}/api/auth/sign-in", data={"secret": edge.secret})
            page.goto(f"{edge.url}/ui/status")
            reason = page.get_by_test_id("sync-reason")
            reason.wait_for(state="visible", timeout=20_000)
            assert reason.inner_text() == message
            assert reason.get_attribute("data-reason") == "identity_mismatch"
            # In Thai: the translated sentence, the appliance's English detail as a tooltip.
            from edge.ui import i18n

            page.context.add_cookies([{"name": i18n.LANG_COOKIE, "value": "th", "url": edge.url}])
            page.reload()
            reason.wait_for(state="visible", timeout=20_000)
            assert reason.inner_text() == i18n.strings("th")["sync.reason.identity_mismatch"]
            assert reason.get_attribute("title") == message
        finally:
            browser.close()
