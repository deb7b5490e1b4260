"""The dashboard in Chromium against a real cloud: scoping, search and charts, CSV, runs.

Every page is screenshotted into test-artifacts/dashboard/.
"""

from __future__ import annotations

import io
import re

import httpx
import pytest

from core.labware import render_csv
from core.pooling import pool_sample
from tests.e2e.dashboard.conftest import Cloud, shot, sign_in
from tests.e2e.dashboard.seed import PASSWORD, push_status

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.s3]


def _sample_id(cloud: Cloud, role: str, number: str) -> str:
    with httpx.Client(base_url=cloud.url) as client:
        token = client.post(
            "/api/v1/auth/login", json={"email": cloud.data.emails[role], "password": PASSWORD}
        ).json()["access_token"]
        found = client.get(
            "/api/v1/samples", params={"q": number}, headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
    assert len(found) == 1, found
    return str(found[0]["id"])


def test_sign_in_shows_clear_errors_and_reset_pages(page, cloud: Cloud) -> None:
    page.goto("/ui/samples")
    assert "/ui/login" in page.url, "an anonymous visit must be sent to sign in"
    shot(page, "01-login")
    page.get_by_label("E-mail address").fill(cloud.data.emails["manager"])
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Incorrect e-mail or password."
    shot(page, "02-login-error")
    # The right password, and the page asked for first.
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/samples")
    cookies = {c["name"]: c for c in page.context.cookies()}
    for name in ("mp_access", "mp_refresh"):
        assert cookies[name]["httpOnly"] and cookies[name]["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    assert "mp_refresh" not in {c["name"] for c in page.context.cookies()}

    page.get_by_role("link", name="Forgot your password?").click()
    shot(page, "03-reset-request")
    page.get_by_label("E-mail address of your account").fill("nobody@example.test")
    page.get_by_role("button", name="Send reset e-mail").click()
    assert "reset token is on its way" in page.get_by_role("status").inner_text()
    page.goto("/ui/reset/confirm")
    page.get_by_label("Reset token from the e-mail").fill("x" * 20)
    page.get_by_label("New password (at least 12 characters)").fill("a-new-password-1")
    page.get_by_label("New password again").fill("a-new-password-1")
    page.get_by_role("button", name="Set password").click()
    assert "invalid, used or expired" in page.get_by_role("alert").inner_text()
    shot(page, "04-reset-confirm-error")


def test_manager_sees_only_their_sites(page, cloud: Cloud) -> None:
    data = cloud.data
    sign_in(page, cloud, "manager")
    rows = page.get_by_test_id("device-row")
    sites = {rows.nth(i).get_attribute("data-site") for i in range(rows.count())}
    assert sites == {data.site_a_name}
    # Problems first: the offline appliance with a backlog heads the table.
    first = rows.first
    assert first.get_attribute("data-device") == "reader-2"
    assert first.get_attribute("data-state") == "offline"
    assert "backlog of 37 runs" in first.inner_text()
    assert page.get_by_role("link", name="Devices").count() == 0
    shot(page, "05-overview-manager")

    page.goto("/ui/samples")
    numbers = page.get_by_test_id("sample-row").all_inner_texts()
    assert any(data.sample_a in n for n in numbers)
    assert not any(data.sample_b in n for n in numbers), "site B's sample leaked"
    series = {s.get_attribute("data-series") for s in page.locator("#trend-gmt .series").all()}
    assert series == {data.site_a_name}, "the trends must cover the manager's sites only"
    appliances = page.get_by_label("Appliance").locator("option").all_inner_texts()
    assert all(not a.startswith("south-") for a in appliances), appliances
    sites = page.get_by_label("Site").locator("option").all_inner_texts()
    assert sites == ["All my sites", data.site_a_name]
    # Another site's sample by URL: the API says it does not exist for this user.
    other = _sample_id(cloud, "manager_b", data.sample_b)
    resp = page.goto(f"/ui/samples/{other}")
    assert resp is not None and resp.status == 404
    assert "Sample not found" in page.get_by_test_id("error-message").inner_text()


def test_sample_search_chart_matches_core_pooling(page, cloud: Cloud) -> None:
    data = cloud.data
    sign_in(page, cloud, "manager")
    page.goto("/ui/samples")
    page.get_by_label("Sample or submission number").fill(data.sample_a)
    page.get_by_role("button", name="Search").click()
    rows = page.get_by_test_id("sample-row")
    assert rows.count() == 1
    shot(page, "06-samples-search")
    with page.expect_download() as listed:
        page.get_by_role("link", name="Export this list as CSV").click()
    lines = listed.value.path().read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("sample_number,submission_number,site,")
    assert len(lines) == 2 and lines[1].startswith(f"{data.sample_a},SUB-{data.tag},")
    rows.first.get_by_role("link", name=data.sample_a).click()
    page.wait_for_url(re.compile(r".*/ui/samples/[0-9a-f-]{36}$"))

    expected = pool_sample(data.sample_a, data.reads_a, n_cols=12, protective_titre=40)
    # The worked example of DOMAIN.md, independently of the cloud's stored summary.
    assert {k: v for k, v in expected.distribution.items() if v} == {
        "4": 1,
        "5": 5,
        "6": 6,
        "7": 2,
        "8": 1,
    }
    bars = page.get_by_test_id("bar")
    assert bars.count() == 13
    heights: dict[str, float] = {}
    for i in range(bars.count()):
        bar = bars.nth(i)
        key = str(bar.get_attribute("data-key"))
        assert int(str(bar.get_attribute("data-count"))) == expected.distribution[key]
        box = bar.bounding_box()
        assert box is not None
        heights[key] = box["height"]
    # Drawn heights are proportional to the counts (the tallest bar is the largest count).
    unit = heights["6"] / 6
    for key, count in expected.distribution.items():
        assert heights[key] == pytest.approx(count * unit, abs=0.75), key
    labels = {
        str(t.get_attribute("data-key")): (t.text_content() or "").strip()
        for t in page.get_by_test_id("bar-value").all()
    }
    assert labels == {k: str(v) for k, v in expected.distribution.items() if v}
    stats = expected.statistics
    assert page.get_by_test_id("stat-n").inner_text() == str(stats.n)
    assert page.get_by_test_id("stat-gmt").inner_text() == f"{stats.gmt:.2f}"
    assert page.get_by_test_id("stat-share").inner_text() == f"{stats.share_protective * 100:.1f} %"
    assert page.get_by_test_id("stat-excluded").inner_text().startswith(str(stats.excluded_total))
    shot(page, "07-sample")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download LabWare CSV").click()
    body = download.value.path().read_text(encoding="utf-8")
    want = io.StringIO(newline="")
    render_csv(expected, want, template="labware")
    assert body == want.getvalue()

    page.get_by_test_id("runs").get_by_role("link").last.click()
    page.wait_for_url("**/ui/runs/*")
    wells = page.get_by_test_id("platemap").locator("tbody .well.flowing")
    assert wells.count() == sum(e or 0 for e in (5, 6, 5, 7, 4, 6, 5, None))
    image = page.get_by_role("img", name=re.compile("Annotated photograph"))
    image.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('img.plate-image'); "
        "return i && i.complete && i.naturalWidth > 0; }"
    )
    assert image.evaluate("i => i.naturalWidth") == 440
    shot(page, "08-run")


def test_trend_charts_and_filters(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "admin")
    page.goto("/ui/samples?read_from=not-a-date")
    assert "Read from: use the form YYYY-MM-DD." in page.get_by_role("alert").inner_text()
    page.goto(f"/ui/samples?site_id={cloud.data.site_b}")
    points = page.locator("#trend-gmt [data-testid=point]")
    assert points.count() >= 5
    series = {s.get_attribute("data-series") for s in page.locator("#trend-gmt .series").all()}
    assert series == {cloud.data.site_b_name}
    shares = [
        float(str(p.get_attribute("data-value")))
        for p in page.locator("#trend-share [data-testid=point]").all()
    ]
    assert shares and all(0.0 <= s <= 1.0 for s in shares)
    shot(page, "09-samples-trends")


def test_live_update_from_device_status(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "manager")
    page.wait_for_selector("body[data-live-connected]")
    row = page.locator("[data-testid=device-row][data-device=reader-1]")
    assert row.get_attribute("data-state") == "online"
    push_status(cloud.settings, cloud.data.device_ids["a1"], online=False)
    page.wait_for_selector("[data-testid=device-row][data-device=reader-1][data-state=offline]")
    assert "Updated" in page.locator("#live").inner_text()
    shot(page, "10-overview-live")
    push_status(cloud.settings, cloud.data.device_ids["a1"], online=True)


def _cookie(page, name: str) -> str | None:  # type: ignore[no-untyped-def]
    return next((c["value"] for c in page.context.cookies() if c["name"] == name), None)


def test_expired_access_token_is_refreshed_once_for_parallel_requests(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "manager")
    old_refresh = _cookie(page, "mp_refresh")
    # An access token the API no longer accepts (as after its 15 minutes).
    page.context.add_cookies(
        [{"name": "mp_access", "value": "expired.access.token", "url": cloud.url}]
    )
    statuses = page.evaluate(
        "() => Promise.all(['/ui/ping', '/ui/overview/fragment', '/ui/ping']"
        ".map(u => fetch(u).then(r => r.status)))"
    )
    assert statuses == [204, 200, 204]
    new_refresh = _cookie(page, "mp_refresh")
    assert new_refresh and new_refresh != old_refresh
    # Refresh rotation is single use: had two requests spent the old token, the family
    # would be revoked and this page would bounce to the sign-in form.
    page.goto("/ui/samples")
    assert page.url.endswith("/ui/samples")
    assert page.get_by_role("heading", name="Samples", exact=True).is_visible()


def test_unusable_session_goes_to_sign_in(page, cloud: Cloud) -> None:
    sign_in(page, cloud, "manager")
    page.context.add_cookies(
        [
            {"name": "mp_access", "value": "bad", "url": cloud.url},
            {"name": "mp_refresh", "value": "bad", "url": cloud.url},
        ]
    )
    page.goto("/ui/samples?q=abc")
    assert "/ui/login?next=%2Fui%2Fsamples%3Fq%3Dabc" in page.url
    assert _cookie(page, "mp_refresh") is None
    resp = page.goto("/ui/no-such-page")
    assert resp is not None and resp.status == 404


def test_reads_held_for_review_are_listed_and_flagged(page, cloud: Cloud) -> None:
    held = str(cloud.data.held_run)
    sign_in(page, cloud, "manager")
    page.get_by_role("link", name="To review").click()
    page.wait_for_url("**/ui/review")
    rows = page.get_by_test_id("review-row")
    mine = [
        rows.nth(i) for i in range(rows.count()) if rows.nth(i).get_attribute("data-run") == held
    ]
    assert len(mine) == 1
    assert "grid misfit" in mine[0].inner_text() and "too many unread" in mine[0].inner_text()
    mine[0].get_by_role("link").click()
    page.wait_for_url(f"**/ui/runs/{held}")
    banner = page.get_by_test_id("review-banner").inner_text()
    assert "Needs review" in banner and "grid_misfit" in banner
    shot(page, "20-run-needs-review")
    # A manager of the other site never sees it.
    page.context.clear_cookies()
    sign_in(page, cloud, "manager_b")
    page.goto("/ui/review")
    assert held not in page.content()
