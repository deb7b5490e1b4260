"""The status page shows model updates (docs/ota.md section 7) in Chromium: why they are off on
an appliance without the signing key, and, live from the `ota.status` event, the candidate
shadowing with its progress and agreement."""

from __future__ import annotations

from typing import Any

from tests.e2e.ui.kiosk import Kiosk


def test_the_status_page_says_why_updates_are_off_and_shows_a_shadowing_model(
    page: Any, kiosk: Kiosk
) -> None:
    page.goto(f"{kiosk.url}/ui/status")
    ota = page.locator("[data-testid=ota]")
    # Locator waits, not wait_for_function: the page's CSP (script-src 'self') refuses the
    # eval a string predicate needs.
    page.locator("[data-testid=ota]", has_text="Model updates off").wait_for()
    # The event below reaches the page only over its event socket: wait until that is up
    # (under load the page rendered before the socket opened and missed the event; CI flake).
    page.wait_for_selector(".live.on")
    assert "no model signing key" in ota.text_content()
    status = kiosk.appliance.ota.status()
    status.update(
        disabled=None,
        enabled=True,
        active={"name": "hi-wells", "version": "2.2.0", "source": "update"},
        shadow={
            "name": "hi-wells",
            "version": "2.3.0",
            "plates": 4,
            "of": 20,
            "agreement": 0.9875,
            "threshold": 0.98,
            "loaded": True,
        },
    )
    kiosk.appliance.events.publish("ota.status", status)
    page.locator("[data-testid=ota][data-shadow='2.3.0']").wait_for()
    text = ota.text_content()
    assert "Updated model: hi-wells 2.2.0" in text
    assert "Shadowing: hi-wells 2.3.0 (4 / 20, agreement 98.8 %)" in text
    assert "Model updates off" not in text
