"""The interactive charts: their JSON series (signed in, scoped to the user's sites, equal to
the server-drawn fallback), and uPlot in Chromium (drawn, hover values, legend toggle, zoom)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from tests.e2e.dashboard.conftest import Cloud, shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.s3]


def test_series_are_signed_in_scoped_and_match_the_fallback(page, cloud: Cloud) -> None:
    with httpx.Client(base_url=cloud.url) as anon:
        resp = anon.get("/ui/charts/trends.json")
        assert resp.status_code == 303 and "/ui/login" in resp.headers["location"]
    sign_in(page, cloud, "manager")
    trends = page.request.get("/ui/charts/trends.json").json()
    names = {s["name"] for s in trends["gmt"]}
    assert names == {cloud.data.site_a_name}  # the manager's one site, never site B
    assert len(trends["x"]) == len(trends["labels"]) == len(trends["gmt"][0]["values"])
    # The same numbers as the SVG the page draws on the server.
    page.goto("/ui/samples")
    svg = {
        p.get_attribute("data-period"): float(str(p.get_attribute("data-value")))
        for p in page.locator("#trend-gmt [data-testid=point]").all()
    }
    json_points = {
        label: value
        for label, value in zip(trends["labels"], trends["gmt"][0]["values"], strict=True)
        if value is not None
    }
    assert json_points == svg and svg

    plates = page.request.get("/ui/charts/plates-per-day.json").json()
    since = datetime.now(timezone.utc).date() - timedelta(days=92)
    with psycopg.connect(cloud.settings.database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT count(*) FROM runs WHERE site_id = %s AND status = 'current' AND read_at >= %s",
            (cloud.data.site_a, since),
        ).fetchone()
    assert row is not None and row[0] > 0
    assert [s["name"] for s in plates["series"]] == [cloud.data.site_a_name]
    assert sum(plates["series"][0]["values"]) == row[0]
    assert len(plates["x"]) == len(plates["labels"]) == len(plates["series"][0]["values"])

    bad = page.request.get("/ui/charts/plates-per-day.json?read_from=yesterday")
    assert bad.status == 400 and "read_from" in bad.json()["detail"]


def test_charts_are_interactive(page, cloud: Cloud) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, cloud, "admin")
    page.goto("/ui/samples")
    ready = page.locator("figure[data-chart-state=ready]")
    ready.nth(2).wait_for()
    assert ready.count() == 3  # GMT, protective share, plates per day
    gmt = page.locator("figure:has(#trend-gmt)")
    assert gmt.locator(".chart-fallback").is_hidden()
    assert gmt.locator(".uplot canvas").count() == 1

    # Hover: the legend shows the values under the cursor.
    over = gmt.locator(".u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, middle)
    page.mouse.move(box["x"] + box["width"] * 0.98, middle, steps=3)
    week = gmt.locator(".u-legend .u-series").first.locator(".u-value").inner_text()
    assert "-W" in week, week
    value = gmt.locator(".u-legend .u-series").nth(1).locator(".u-value").inner_text()
    assert value != "–" and float(value) > 0

    # Legend: a click switches a site's line off and on.
    first_site = gmt.locator(".u-legend .u-series").nth(1)
    first_site.locator(".u-label").click()
    assert "u-off" in str(first_site.get_attribute("class"))
    first_site.locator(".u-label").click()
    assert "u-off" not in str(first_site.get_attribute("class"))

    # Zoom: a drag across the plot narrows the x range; a double-click resets it.
    def x_range() -> tuple[float, float]:
        lo, hi = gmt.evaluate("f => [f.uplot.scales.x.min, f.uplot.scales.x.max]")
        return float(lo), float(hi)

    full = x_range()
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.1, middle)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, middle, steps=5)
    page.mouse.up()
    zoomed = x_range()
    assert full[0] < zoomed[0] < zoomed[1] < full[1], (full, zoomed)
    over.dblclick()
    assert x_range() == full
    shot(page, "10-samples-uplot")
    assert not [e for e in errors if "Content Security Policy" in e or "uPlot" in e], errors


def test_review_share_charts_draw_in_scope(page, cloud: Cloud) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, cloud, "manager")
    by_device = page.request.get("/ui/charts/review-share.json?by=device").json()
    by_model = page.request.get("/ui/charts/review-share.json?by=model").json()
    names = [s["name"] for s in by_device["series"]]
    assert names and all(n.startswith(f"{cloud.data.site_a_name} · ") for n in names), names
    since = datetime.now(timezone.utc).date() - timedelta(days=182)
    with psycopg.connect(cloud.settings.database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'needs_review') FROM runs"
            " WHERE site_id = %s AND status <> 'deleted' AND read_at >= %s",
            (cloud.data.site_a, since),
        ).fetchone()
    assert row is not None and row[1] > 0
    for body in (by_device, by_model):
        reads = sum(n for s in body["series"] for n in s["reads"] if n is not None)
        held = sum(n for s in body["series"] for n in s["held"] if n is not None)
        assert (reads, held) == (row[0], row[1])

    page.goto("/ui/review")
    ready = page.locator('figure[data-chart-src*="review-share"][data-chart-state=ready]')
    ready.nth(1).wait_for()
    assert ready.count() == 2  # per appliance, per model version
    # The field-accuracy charts beside them: per appliance, site and model version.
    field = page.locator('figure[data-chart-src*="field-accuracy"][data-chart-state=ready]')
    field.nth(2).wait_for()
    assert field.count() == 3
    for by, body in (("device", by_device), ("model", by_model)):
        figure = page.locator(f"figure:has(#held-{by}-cap)")
        assert figure.locator(".chart-fallback").is_hidden()
        assert figure.locator(".uplot canvas").count() == 1
        legend = figure.locator(".u-legend .u-series .u-label").all_inner_texts()
        assert legend == ["Week"] + [s["name"] for s in body["series"]]
    # Hover over the newest week: the legend shows a share in per cent, with its counts.
    figure = page.locator("figure:has(#held-device-cap)")
    over = figure.locator(".u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, middle)
    page.mouse.move(box["x"] + box["width"] * 0.99, middle, steps=3)
    values = figure.locator(".u-legend .u-series .u-value").all_inner_texts()
    assert "-W" in values[0] and any(
        re.fullmatch(r"[\d.]+ % \(\d+ of \d+\)", v) for v in values[1:]
    ), values
    shot(page, "11-review-share-uplot")
    assert not [e for e in errors if "Content Security Policy" in e or "uPlot" in e], errors
