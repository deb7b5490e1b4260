"""Every screen at 800×480, 1024×600 and 1280×800 (and Thai at the smallest): a screenshot
for people to look at (test-artifacts/ui/), nothing wider than the viewport, key elements on
screen, and every touch target at least 48 px."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ui.conftest import VIEWPORTS
from tests.e2e.ui.kiosk import OPERATOR_SECRET, Kiosk

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOUCH_PX = 48
TARGETS = "button, a.button, .tab, input, select, .row-link, .last, .key"
HERE = Path(__file__).parent
# Whatever is outside the viewport or narrower than a finger, with where it is.
MEASURE = (HERE / "measure.js").read_text(encoding="utf-8")
ON_SCREEN = (HERE / "on_screen.js").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def seeded(kiosk: Kiosk, browser: Any) -> Iterator[dict[str, str]]:
    """One read plate, so the result and sample screens have something to show."""
    ctx = browser.new_context()
    req = ctx.request
    assert req.post(f"{kiosk.url}/api/auth/sign-in", data={"secret": OPERATOR_SECRET}).ok
    ticket = req.post(f"{kiosk.url}/api/capture", data={"sample_number": "S-VIEW-1"}).json()
    state = req.get(f"{kiosk.url}/api/tickets/{ticket['id']}?wait=60").json()
    assert state["state"] == "done", state
    ctx.close()
    yield {"run_id": state["run_id"], "sample": "S-VIEW-1"}


def _open_keypad(page: Any) -> None:
    page.tap("#sample")
    page.wait_for_selector(".keypad .keypad-display")


def _open_zoom(page: Any) -> None:
    page.wait_for_selector("#plate .well")
    page.click("#image-btn")
    page.wait_for_function("() => document.getElementById('zoom-img').naturalWidth > 0")


def _open_delete(page: Any) -> None:
    page.wait_for_selector("#plate .well")
    page.click("#delete")
    page.wait_for_selector(".reasons")


def _open_pin(page: Any) -> None:
    page.click("#save-grid")
    page.wait_for_selector(".pin #pin-ok")


Screen = tuple[str, str, list[str], Callable[[Any], None] | None]


def screens(seeded: dict[str, str]) -> list[Screen]:
    run, sample = seeded["run_id"], seeded["sample"]
    return [
        ("capture", "/ui/capture", ["#sample", "#description", "#capture-btn", ".tabs"], None),
        (
            "keypad",
            "/ui/capture",
            [".keypad-display", ".keypad .tools .primary", ".keypad .key-row:first-child"],
            _open_keypad,
        ),
        (
            "result",
            f"/ui/runs/{run}",
            ["#r-sample", "#plate", "#rows tbody tr:last-child .titre", "#reread", "#delete"],
            None,
        ),
        ("zoom", f"/ui/runs/{run}", ["#zoom-in", "#zoom-out", "#zoom-close"], _open_zoom),
        ("delete", f"/ui/runs/{run}", ['[data-reason="result.reason_duplicate"]'], _open_delete),
        (
            "review",
            f"/ui/review/{run}",
            ['#rv-plate .rv-well[data-well="H12"]', "#rv-reread", "#rv-accept", "#rv-save"],
            None,
        ),
        ("review-queue", "/ui/review", [".tabs", ".review-queue h1"], None),
        ("samples", "/ui/samples", ["#search", ".row-link"], None),
        ("sample", f"/ui/samples/{sample}", ["#chart svg", "#stats", "#runs .row-link"], None),
        ("status", "/ui/status", ["#st-camera", "#st-sync", "#st-disk", "#st-version"], None),
        ("calibration", "/ui/calibration", ["#grid-svg", "#save-grid", "#propose"], None),
        ("pin", "/ui/calibration", ["#pin-ok", "#pin-cancel", '[data-pin="0"]'], _open_pin),
        ("settings", "/ui/settings", ["#csv_template", "#control-columns", "#save"], None),
    ]


def test_the_layout_checks_can_fail(browser: Any) -> None:
    """The measurements above must notice what they look for."""
    ctx = browser.new_context(viewport={"width": 800, "height": 480})
    try:
        page = ctx.new_page()
        page.set_content(
            '<body style="margin:0"><div style="width:900px">wide</div>'
            '<button id="tiny" style="width:30px;height:30px">x</button>'
            '<button id="low" style="position:absolute;top:600px">y</button></body>'
        )
        found = page.evaluate(MEASURE, [TARGETS, TOUCH_PX])
        assert any(p.startswith("page scrolls sideways") for p in found), found
        assert any(p.startswith("small target: #tiny") for p in found), found
        placed = page.evaluate(ON_SCREEN, ["#low", "#missing", "#tiny"])
        assert len(placed) == 2, placed  # #tiny is on screen
        assert placed[0].startswith("off screen: #low") and placed[1] == "missing: #missing"
    finally:
        ctx.close()


CASES = [(w, h, "en") for w, h in VIEWPORTS] + [(800, 480, "th")]


@pytest.mark.parametrize(("width", "height", "lang"), CASES, ids=lambda v: str(v))
def test_every_screen_fits(
    browser: Any,
    kiosk: Kiosk,
    seeded: dict[str, str],
    artifacts: Path,
    width: int,
    height: int,
    lang: str,
) -> None:
    ctx = browser.new_context(viewport={"width": width, "height": height}, has_touch=True)
    try:
        ctx.add_cookies([{"name": "mp_lang", "value": lang, "url": kiosk.url}])
        page = ctx.new_page()
        problems: dict[str, list[str]] = {}
        # Signed out first: the sign-in screen.
        page.goto(f"{kiosk.url}/ui/capture")
        page.wait_for_selector("#secret")
        found = page.evaluate(MEASURE, [TARGETS, TOUCH_PX]) + page.evaluate(
            ON_SCREEN, ["#secret", "#sign-in"]
        )
        page.screenshot(path=str(artifacts / f"{width}x{height}-{lang}-sign-in.png"))
        if found:
            problems["sign-in"] = found
        assert ctx.request.post(
            f"{kiosk.url}/api/auth/sign-in", data={"secret": OPERATOR_SECRET}
        ).ok
        for name, path, key, prepare in screens(seeded):
            page.goto(f"{kiosk.url}{path}")
            page.wait_for_selector(".live.on")  # the event socket is up: the page's data too
            if prepare:
                prepare(page)
            page.wait_for_timeout(150)  # fonts and the last fetch settle
            found = page.evaluate(MEASURE, [TARGETS, TOUCH_PX]) + page.evaluate(ON_SCREEN, key)
            page.screenshot(path=str(artifacts / f"{width}x{height}-{lang}-{name}.png"))
            if found:
                problems[name] = found
        assert problems == {}
    finally:
        ctx.close()
