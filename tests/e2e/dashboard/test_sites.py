"""Sites and devices managed from the dashboard, not only the CLI: create a site, rename it,
provision a device for it and download its bundle once, disable the site (its device loses
broker and API access), enable it again, revoke the device."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.e2e.dashboard.conftest import Cloud, shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.s3]


def test_admin_manages_a_site_and_its_device(page, cloud: Cloud) -> None:
    slug = f"lab-{secrets.token_hex(3)}"
    sign_in(page, cloud, "admin")
    page.get_by_role("link", name="Sites").click()
    page.get_by_label("Site id (in MQTT topics)").fill(slug)
    page.get_by_label("Name", exact=True).fill("New lab")
    page.get_by_role("button", name="Create site").click()
    page.wait_for_url("**/ui/sites?done=*")
    assert f"Site {slug} created" in page.get_by_test_id("flash").inner_text()
    row = page.locator(f"[data-testid=site-row][data-site='{slug}']")
    assert row.get_attribute("data-state") == "enabled"

    # A site id that is taken gets a clear message.
    page.get_by_label("Site id (in MQTT topics)").fill(slug)
    page.get_by_label("Name", exact=True).fill("Twice")
    page.get_by_role("button", name="Create site").click()
    assert "already exists" in page.get_by_role("alert").inner_text()

    page.get_by_label(f"Name of {slug}").fill("Renamed lab")
    page.get_by_role("button", name=f"Rename {slug}").click()
    page.wait_for_url("**/ui/sites?done=*")
    assert page.get_by_label(f"Name of {slug}").input_value() == "Renamed lab"

    # Provision a device there; the bundle is offered once.
    page.get_by_role("link", name="Devices", exact=True).click()
    page.get_by_label("Site").select_option(label=f"Renamed lab ({slug})")
    page.get_by_label("Device id (in MQTT topics)").fill("reader-1")
    page.get_by_role("button", name="Provision").click()
    with page.expect_download() as download:
        page.get_by_test_id("download-bundle").click()
    bundle = json.loads(download.value.path().read_text(encoding="utf-8"))
    assert bundle["site"] == slug and bundle["mqtt_username"] == f"{slug}.reader-1"
    assert bundle["expires_at"] > bundle["issued_at"]
    page.goto("/ui/devices")
    assert page.get_by_test_id("bundle").count() == 0  # shown once, never again
    token = {"Authorization": f"Bearer {bundle['device_token']}"}
    acl = cloud.settings.mqtt_acl_file
    assert httpx.get(f"{cloud.url}/api/v1/device/me", headers=token).status_code == 200
    assert bundle["mqtt_username"] in acl.read_text(encoding="utf-8")

    page.goto("/ui/sites")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Disable {slug}").click()
    page.wait_for_url("**/ui/sites?done=*")
    assert row.get_attribute("data-state") == "disabled"
    shot(page, "17-sites-disabled")
    assert httpx.get(f"{cloud.url}/api/v1/device/me", headers=token).status_code == 401
    assert bundle["mqtt_username"] not in acl.read_text(encoding="utf-8")
    page.goto("/ui/devices")  # no new device for a disabled site
    assert page.get_by_label("Site").locator(f"option:has-text('{slug}')").count() == 0

    page.goto("/ui/sites")
    page.get_by_role("button", name=f"Enable {slug}").click()
    page.wait_for_url("**/ui/sites?done=*")
    assert row.get_attribute("data-state") == "enabled"
    assert httpx.get(f"{cloud.url}/api/v1/device/me", headers=token).status_code == 200
    assert bundle["mqtt_username"] in acl.read_text(encoding="utf-8")

    page.goto("/ui/devices")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Revoke {bundle['mqtt_username']}").click()
    page.wait_for_url("**/ui/devices?revoked=*")
    assert httpx.get(f"{cloud.url}/api/v1/device/me", headers=token).status_code == 401


def test_viewer_cannot_reach_the_sites_page(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "viewer")
    assert page.get_by_role("link", name="Sites").count() == 0
    resp = page.goto("/ui/sites")
    assert resp is not None and resp.status == 403
