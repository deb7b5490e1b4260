"""Admin pages in Chromium: provision and revoke a device, invite a user, audit, refusals."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.dashboard.conftest import Cloud, shot, sign_in
from tests.e2e.dashboard.seed import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.s3]


def _token(cloud: Cloud, role: str) -> str:
    resp = httpx.post(
        f"{cloud.url}/api/v1/auth/login",
        json={"email": cloud.data.emails[role], "password": PASSWORD},
    )
    assert resp.status_code == 200
    return str(resp.json()["access_token"])


def test_admin_provisions_downloads_and_revokes_a_device(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "admin")
    page.get_by_role("link", name="Devices").click()
    page.get_by_label("Site").select_option(str(cloud.data.site_b))
    page.get_by_label("Device id (in MQTT topics)").fill("reader-9")
    page.get_by_label("Name").fill("Bench reader")
    page.get_by_role("button", name="Provision").click()
    assert page.get_by_test_id("bundle").is_visible()
    shot(page, "11-devices-bundle")
    with page.expect_download() as download:
        page.get_by_test_id("download-bundle").click()
    assert download.value.suggested_filename.endswith("-reader-9.json")
    bundle = json.loads(download.value.path().read_text(encoding="utf-8"))
    assert bundle["device"] == "reader-9" and bundle["mqtt_password"]
    device_headers = {"Authorization": f"Bearer {bundle['device_token']}"}
    me = httpx.get(f"{cloud.url}/api/v1/device/me", headers=device_headers)
    assert me.status_code == 200 and me.json()["device"] == "reader-9"
    acl = cloud.settings.mqtt_acl_file.read_text(encoding="utf-8")
    assert bundle["mqtt_username"] in acl

    # A bad device id gets a clear message and the form keeps what was typed.
    page.get_by_label("Site").select_option(str(cloud.data.site_b))
    page.get_by_label("Device id (in MQTT topics)").evaluate("e => e.removeAttribute('pattern')")
    page.get_by_label("Device id (in MQTT topics)").fill("Bad_Name")
    page.get_by_role("button", name="Provision").click()
    assert "lower-case letters" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Device id (in MQTT topics)").input_value() == "Bad_Name"

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Revoke {bundle['mqtt_username']}").click()
    page.wait_for_url("**/ui/devices?revoked=*")
    assert bundle["mqtt_username"] in page.get_by_test_id("flash").inner_text()
    row = page.locator(f"[data-testid=device-admin-row][data-username='{bundle['mqtt_username']}']")
    assert row.get_attribute("data-status") == "revoked"
    shot(page, "12-devices-revoked")
    assert httpx.get(f"{cloud.url}/api/v1/device/me", headers=device_headers).status_code == 401
    assert bundle["mqtt_username"] not in cloud.settings.mqtt_acl_file.read_text(encoding="utf-8")

    page.goto("/ui/audit?action=device.revoked")
    assert page.get_by_test_id("audit-row").count() >= 1
    first = page.get_by_test_id("audit-row").first.inner_text()
    assert cloud.data.emails["admin"] in first
    assert "Bench reader" in first and str(me.json()["device_id"])[:8] not in first  # a name
    shot(page, "13-audit")


def test_viewer_cannot_reach_admin_pages(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "viewer")
    assert page.get_by_role("link", name="Users").count() == 0
    for path in ("/ui/devices", "/ui/users", "/ui/audit"):
        resp = page.goto(path)
        assert resp is not None and resp.status == 403, path
        assert "administrators" in page.get_by_test_id("error-message").inner_text()
    shot(page, "14-forbidden")
    # A hand-made form post from the viewer's own session: the API refuses it.
    resp = page.request.post(
        "/ui/devices",
        form={"site_id": str(cloud.data.site_a), "slug": "sneaky-1", "name": ""},
        headers={"Origin": cloud.url},
    )
    assert resp.status == 403
    # And the API refuses the viewer directly.
    headers = {"Authorization": f"Bearer {_token(cloud, 'viewer')}"}
    assert httpx.get(f"{cloud.url}/api/v1/users", headers=headers).status_code == 403
    assert httpx.get(f"{cloud.url}/api/v1/audit", headers=headers).status_code == 403
    created = httpx.post(
        f"{cloud.url}/api/v1/devices",
        headers=headers,
        json={"site_id": str(cloud.data.site_a), "slug": "sneaky-2"},
    )
    assert created.status_code == 403
    admin = {"Authorization": f"Bearer {_token(cloud, 'admin')}"}
    slugs = {d["slug"] for d in httpx.get(f"{cloud.url}/api/v1/devices", headers=admin).json()}
    assert not {"sneaky-1", "sneaky-2"} & slugs


def test_cross_site_form_post_is_refused(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "admin")
    for origin in ("http://evil.example", None):
        headers = {"Origin": origin} if origin else {}
        resp = page.request.post(
            "/ui/devices",
            form={"site_id": str(cloud.data.site_a), "slug": "csrf-1", "name": ""},
            headers=headers,
        )
        assert resp.status == 403
        assert "not sent from a page of this dashboard" in resp.text()
    page.goto("/ui/devices")
    assert page.locator("[data-username$='.csrf-1']").count() == 0


def test_admin_invites_a_user_who_sets_a_password(page, cloud: Cloud) -> None:
    email = f"new-{cloud.data.tag}@example.com"
    sign_in(page, cloud, "admin")
    page.goto("/ui/users")
    # A reserved domain is refused by the API; the page says so and keeps the form.
    page.get_by_label("E-mail address").fill(f"new-{cloud.data.tag}@example.test")
    page.get_by_label("Full name").fill("New Person")
    page.get_by_role("button", name="Invite").click()
    assert page.get_by_role("alert").inner_text() == "Enter a valid e-mail address."
    assert page.get_by_label("Full name").input_value() == "New Person"
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Full name").fill("New Person")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("group", name="Sites", exact=True).get_by_label(cloud.data.site_b_name).check()
    page.get_by_role("button", name="Invite").click()
    page.wait_for_url("**/ui/users?done=*")
    row = page.locator(f"[data-testid=user-row][data-email='{email}']")
    assert row.count() == 1
    shot(page, "15-users")
    # Disable and re-enable through the row form; the API records both.
    row.get_by_label("active").uncheck()
    row.get_by_role("button", name="Save").click()
    page.wait_for_url("**/ui/users?done=updated*")
    assert "disabled" in page.locator(f"[data-testid=user-row][data-email='{email}']").inner_text()
    row = page.locator(f"[data-testid=user-row][data-email='{email}']")
    row.get_by_label("active").check()
    row.get_by_role("button", name="Save").click()
    page.wait_for_url("**/ui/users?done=updated*")

    # The invitation is a reset e-mail (development sink here); the invitee sets a password.
    mail = cloud.settings.dev_mail_sink.read_text(encoding="utf-8")
    token = mail.strip().splitlines()[-1].strip()
    page.get_by_role("button", name="Sign out").click()
    page.goto("/ui/reset/confirm")
    page.get_by_label("Reset token from the e-mail").fill(token)
    page.get_by_label("New password (at least 12 characters)").fill("invited-password-42")
    page.get_by_label("New password again").fill("invited-password-42")
    page.get_by_role("button", name="Set password").click()
    assert "password has been changed" in page.get_by_role("status").inner_text()
    page.goto("/ui/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill("invited-password-42")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/")
    assert email in page.get_by_test_id("who").inner_text()
    sites = {r.get_attribute("data-site") for r in page.get_by_test_id("device-row").all()}
    assert sites == {cloud.data.site_b_name}


def test_live_socket_needs_the_cookie_and_this_origin(page, cloud: Cloud) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    sign_in(page, cloud, "manager")
    access = next(c["value"] for c in page.context.cookies() if c["name"] == "mp_access")
    url = cloud.url.replace("http://", "ws://") + "/ui/events"
    cookie = {"Cookie": f"mp_access={access}"}
    with connect(url, origin=cloud.url, additional_headers=cookie, proxy=None) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"type": "hello"}
    refusals = [
        {"origin": "http://evil.example", "additional_headers": cookie},  # hijacking
        {"origin": cloud.url, "additional_headers": {}},  # no session
        {"origin": cloud.url, "additional_headers": {"Cookie": "mp_access=forged"}},
    ]
    for kwargs in refusals:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, proxy=None, **kwargs)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
