"""Every page at 1280×800: labelled controls, no horizontal scrolling, no console or CSP
errors (no inline script or style slipped in), security headers present."""

from __future__ import annotations

import pytest

from tests.e2e.dashboard.conftest import Cloud, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.s3]

UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.name || e.id || e.outerHTML.slice(0, 60))"""


def _pages(cloud: Cloud) -> list[str]:
    import httpx

    from tests.e2e.dashboard.seed import PASSWORD

    with httpx.Client(base_url=cloud.url) as client:
        token = client.post(
            "/api/v1/auth/login",
            json={"email": cloud.data.emails["admin"], "password": PASSWORD},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        sample = client.get(
            "/api/v1/samples", params={"q": cloud.data.sample_a}, headers=headers
        ).json()["items"][0]
    return [
        "/ui/",
        "/ui/samples",
        f"/ui/samples/{sample['id']}",
        f"/ui/runs/{cloud.data.run_with_image}",
        "/ui/devices",
        "/ui/users",
        "/ui/audit",
        "/ui/nothing-here",
    ]


def test_every_page_is_clean_at_1280(page, cloud: Cloud) -> None:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    for path in ("/ui/login", "/ui/reset", "/ui/reset/confirm"):
        _check(page, path, problems)
    sign_in(page, cloud, "admin")
    for path in _pages(cloud):
        _check(page, path, problems)
    # Bad values in the address are pages too, never the API's JSON.
    for path, status in (("/ui/samples/not-a-uuid", 404), ("/ui/audit?before_id=abc", 400)):
        resp = page.goto(path)
        assert resp is not None and resp.status == status, path
        assert resp.headers["content-type"].startswith("text/html"), path
        assert page.get_by_test_id("error-message").is_visible(), path
    # 4xx answers for the pages above are expected; anything else in the console is not.
    unexpected = [p for p in problems if "404" not in p and "400" not in p]
    assert unexpected == []


def _check(page, path: str, problems: list[str]) -> None:  # type: ignore[no-untyped-def]
    resp = page.goto(path)
    assert resp is not None
    headers = resp.headers
    assert "default-src 'self'" in headers.get("content-security-policy", ""), path
    assert headers.get("x-content-type-options") == "nosniff", path
    page.wait_for_load_state("networkidle")
    assert page.evaluate(UNLABELLED) == [], path
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 1280, f"{path} scrolls sideways ({width}px)"
    assert page.locator("h1").count() == 1, path
