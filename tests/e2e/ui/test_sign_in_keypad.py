"""Issue 19, the touchscreen at 800x480: the wrong-secret message is not hidden behind the
on-screen keypad, and the field's label says what the field takes (the operator secret)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ui.kiosk import OPERATOR_SECRET, Kiosk

pytestmark = [pytest.mark.browser]

ON_TOP = """(sel) => {
  const node = document.querySelector(sel);
  const r = node.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return {top: r.top, bottom: r.bottom, visible: node === hit || node.contains(hit)};
}"""


def type_on_keypad(page: Any, text: str) -> None:
    for ch in text:
        if ch.isalpha() and (ch.isupper() != (page.inner_text("#keypad-case") == "abc")):
            page.tap("#keypad-case")
        page.locator(".keypad .key", has_text=re.compile(f"^{re.escape(ch)}$")).first.tap()
    page.locator(".keypad .key", has_text="Done").tap()


def assert_seen(page: Any, selector: str) -> None:
    box = page.evaluate(ON_TOP, selector)
    assert box["visible"], f"{selector} is covered"
    assert box["top"] >= 0 and box["bottom"] <= 480, f"{selector} is off screen: {box}"


def test_wrong_secret_stays_visible_with_the_keypad_open(
    browser: Any, kiosk: Kiosk, artifacts: Path
) -> None:
    ctx = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    try:
        page = ctx.new_page()
        page.goto(f"{kiosk.url}/ui/sign-in")
        # The label names what the field takes, and the keypad is titled the same.
        field = page.get_by_label("Operator secret")
        assert field.get_attribute("id") == "secret"
        assert "operator secret" in page.inner_text(".sign-in .hint").lower()
        page.tap("#secret")
        page.wait_for_selector(".keypad .keypad-display")
        assert page.inner_text(".keypad-title") == "Operator secret"
        type_on_keypad(page, "wrong1")
        page.click("#sign-in")
        page.wait_for_selector("#secret-error:not([hidden])")
        message = page.inner_text("#secret-error")
        assert "secret" in message.lower()
        assert_seen(page, "#secret-error")
        # The operator taps the field to try again: the keypad covers the page, so it
        # repeats the message where it can be read.
        page.tap("#secret")
        page.wait_for_selector(".keypad .keypad-error")
        assert page.inner_text(".keypad .keypad-error") == message
        assert_seen(page, ".keypad .keypad-error")
        page.screenshot(path=str(artifacts / "sign-in-keypad-error-800x480.png"))
        page.locator(".keypad .key", has_text="Clear").tap()
        type_on_keypad(page, OPERATOR_SECRET)
        page.click("#sign-in")
        page.wait_for_url(f"{kiosk.url}/ui/capture")
    finally:
        ctx.close()
