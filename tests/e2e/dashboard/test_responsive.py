"""The dashboard at a phone, a tablet and a desktop size: no page scrolls sideways, wide tables
become stacked cards on the phone, charts fit their screen. Screenshots of every page at every
size go to test-artifacts/dashboard/responsive/."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.dashboard.conftest import ARTIFACTS, Cloud, sign_in
from tests.e2e.dashboard.seed import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.s3]

SIZES = {"phone": (390, 844), "tablet": (768, 1024), "desktop": (1440, 900)}

# How wide the page's content is, against the window: equal when nothing overflows sideways.
OVERFLOW = """() => {
  const doc = document.documentElement;
  const wide = [...document.querySelectorAll('body *')]
    .filter(el => el.getBoundingClientRect().right > doc.clientWidth + 1
                  && getComputedStyle(el).position !== 'absolute')
    .slice(0, 5).map(el => el.tagName + '.' + el.className);
  return {scroll: doc.scrollWidth, client: doc.clientWidth, wide};
}"""


def _sample_id(cloud: Cloud) -> str:
    with httpx.Client(base_url=cloud.url) as client:
        token = client.post(
            "/api/v1/auth/login", json={"email": cloud.data.emails["admin"], "password": PASSWORD}
        ).json()["access_token"]
        found = client.get(
            "/api/v1/samples",
            params={"q": cloud.data.sample_a},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["items"]
    return str(found[0]["id"])


@pytest.mark.parametrize("size", list(SIZES))
def test_no_page_scrolls_sideways(browser, cloud: Cloud, size: str) -> None:  # type: ignore[no-untyped-def]
    width, height = SIZES[size]
    context = browser.new_context(base_url=cloud.url, viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    page = context.new_page()
    out = ARTIFACTS / "responsive"
    out.mkdir(parents=True, exist_ok=True)
    try:
        page.goto("/ui/login")
        assert page.evaluate(OVERFLOW)["scroll"] <= width
        sign_in(page, cloud, "admin")
        pages = {
            "overview": "/ui/",
            "samples": "/ui/samples",
            "sample": f"/ui/samples/{_sample_id(cloud)}",
            "run": f"/ui/runs/{cloud.data.run_with_image}",
            "review": "/ui/review",
            "models": "/ui/models",
            "sites": "/ui/sites",
            "devices": "/ui/devices",
            "users": "/ui/users",
            "audit": "/ui/audit",
        }
        for name, url in pages.items():
            resp = page.goto(url)
            assert resp is not None and resp.status == 200, (name, resp and resp.status)
            page.screenshot(path=str(out / f"{size}-{name}.png"), full_page=True)
            found = page.evaluate(OVERFLOW)
            assert found["scroll"] <= found["client"] <= width, (size, name, found)
            for chart in page.locator("figure.chart").all():
                box = chart.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width

        # The interactive charts take the width of their box, whatever the screen.
        page.goto("/ui/samples")
        drawn = page.locator("figure[data-chart-state=ready] .uplot")
        drawn.nth(2).wait_for()
        for chart in drawn.all():
            box = chart.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert page.evaluate(OVERFLOW)["scroll"] <= width
        page.screenshot(path=str(out / f"{size}-samples-charts.png"), full_page=True)

        # Tables: stacked labelled cards on the phone, real table rows elsewhere.
        row = page.locator("table.grid tbody tr").first
        display = row.evaluate("el => getComputedStyle(el).display")
        label = row.locator("td").first.get_attribute("data-label")
        heading = page.locator("table.grid thead th").first.inner_text()
        assert label == heading.strip()
        assert display == ("block" if width <= 820 else "table-row"), (size, display)

        # The review page's held-share charts fit the screen too once drawn.
        page.goto("/ui/review")
        drawn = page.locator("figure[data-chart-state=ready] .uplot")
        drawn.nth(1).wait_for()
        for chart in drawn.all():
            box = chart.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert page.evaluate(OVERFLOW)["scroll"] <= width
        page.screenshot(path=str(out / f"{size}-review-charts.png"), full_page=True)
    finally:
        context.close()
