"""The touchscreen driven by headless Chromium against a real appliance on 127.0.0.1.

Operator flow (scan → capture → result → CSV in the share), live updates, re-read, supervisor
delete with the PIN, calibration drag and save, language switch, and operator-worded errors.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from core import present
from edge.capture import Frame
from edge.errors import CaptureUnavailable
from tests.e2e.ui.kiosk import OPERATOR_SECRET, SUPERVISOR_PIN, Kiosk
from tests.edge import plates

pytestmark = [pytest.mark.browser, pytest.mark.slow]

READ_TIMEOUT_MS = 60_000  # a CPU read of a real plate with ONNX Runtime takes seconds


def enter_pin(page: Any, pin: str) -> None:
    page.wait_for_selector(".pin #pin-display")
    for digit in pin:
        page.click(f'.pin [data-pin="{digit}"]')
    page.click("#pin-ok")


def capture(page: Any, kiosk: Kiosk, scan: str) -> str:
    """Scan a barcode into the capture page, press Capture; return the new run id."""
    page.goto(f"{kiosk.url}/ui/capture")
    page.click("body", position={"x": 5, "y": 200})  # nothing focused: the scan must still land
    page.locator("#sample").evaluate("el => el.blur()")
    page.keyboard.type(scan, delay=5)  # a scanner is a keyboard
    page.keyboard.press("Enter")
    page.click("#capture-btn")
    page.wait_for_url(re.compile(r"/ui/runs/[0-9a-f-]+$"), timeout=READ_TIMEOUT_MS)
    page.wait_for_selector("#plate .well")
    # A new run for this sample, not an earlier read of the same picture.
    assert page.inner_text("#r-sample") == re.split(r"[,|]", scan)[0]
    return str(page.url.rsplit("/", 1)[1])


def expected_titre(row: dict[str, Any], start: int) -> str:
    # The dashboard shows the same text (core.present), e.g. "< 10", "≥ 20480".
    return present.titre_text(row["titre"], row["flags"], start_dilution=start)


def run_json(page: Any, kiosk: Kiosk, run_id: str) -> dict[str, Any]:
    res = page.context.request.get(f"{kiosk.url}/api/runs/{run_id}")
    assert res.ok, res.text()
    data: dict[str, Any] = res.json()
    return data


def test_sign_in_page_signs_the_kiosk_in(browser: Any, kiosk: Kiosk) -> None:
    ctx = browser.new_context(viewport={"width": 800, "height": 480})
    try:
        page = ctx.new_page()
        page.goto(f"{kiosk.url}/ui/samples")
        assert "/ui/sign-in?next=/ui/samples" in page.url
        page.fill("#secret", "not-the-secret")
        page.click("#sign-in")
        page.wait_for_selector("#secret-error:not([hidden])")
        assert "secret" in page.inner_text("#secret-error").lower()
        page.fill("#secret", OPERATOR_SECRET)
        page.click("#sign-in")
        page.wait_for_url(f"{kiosk.url}/ui/samples")
        page.wait_for_selector(".live.on")  # the event socket is connected
    finally:
        ctx.close()


def test_operator_scans_captures_and_gets_result_and_csv(page: Any, kiosk: Kiosk) -> None:
    page.goto(f"{kiosk.url}/ui/capture")
    page.locator("#sample").focus()
    page.keyboard.type("S-100|SUB-7|Flock 12, house 3", delay=5)
    page.keyboard.press("Enter")
    assert page.input_value("#sample") == "S-100"
    assert page.input_value("#submission") == "SUB-7"
    assert page.input_value("#description") == "Flock 12, house 3"  # the rest stays whole

    page.click("#capture-btn")
    page.wait_for_url(re.compile(r"/ui/runs/[0-9a-f-]+$"), timeout=READ_TIMEOUT_MS)
    page.wait_for_selector("#plate .well")
    run_id = page.url.rsplit("/", 1)[1]
    run = run_json(page, kiosk, run_id)
    assert run["sample_number"] == "S-100" and run["submission_number"] == "SUB-7"

    assert page.locator("#plate .well").count() == 96
    for well in run["wells"]:
        assert page.get_attribute(f'[data-well="{well["well_id"]}"]', "data-state") == well["state"]
    # Tapping a well spells out its call (no hover on a touchscreen).
    a1 = next(w for w in run["wells"] if w["well_id"] == "A1")
    page.click('[data-well="A1"]')
    info = page.inner_text("#well-info")
    assert info.startswith("A1: " + a1["state"].capitalize())
    if a1["confidence"] is not None:
        assert f"{round(a1['confidence'] * 100)}%" in info
    # So does tapping a row (its flags may be cut short to keep one line per row).
    row_a = run["rows"][0]
    page.click('#rows tr[data-row="A"]')
    info = page.inner_text("#well-info")
    start = run["dilution"]["start_dilution"]
    assert info.startswith("Row A: Titre " + expected_titre(row_a, start)), info
    assert all(flag.replace("_", " ") in info for flag in row_a["flags"]), info
    assert ("not counted" in info) is (not row_a["counted"]), info
    rows = page.locator("#rows tbody tr")
    assert rows.count() == len(run["rows"]) == 8
    for i, row in enumerate(run["rows"]):
        assert rows.nth(i).locator(".endpoint").inner_text() == str(row["endpoint"])
        shown = rows.nth(i).locator(".titre").inner_text()
        assert shown == expected_titre(row, run["dilution"]["start_dilution"])

    # The LabWare CSV is in the share, and the page says so once it is written.
    page.wait_for_function(
        "() => document.getElementById('r-csv').textContent.includes('.csv')", timeout=20_000
    )
    name = page.inner_text("#r-csv").split(": ", 2)[-1].strip()
    csv = kiosk.share_dir / name
    assert csv.is_file(), sorted(p.name for p in kiosk.share_dir.iterdir())
    text = csv.read_text(encoding="utf-8")
    assert text.startswith("SAMPLE_NUMBER,TEST_NUMBER,REPORTED_NAME,ENTRY\n")
    assert "S-100,T001,1," in text


def test_a_new_result_appears_without_reloading(page: Any, kiosk: Kiosk, context: Any) -> None:
    page.goto(f"{kiosk.url}/ui/samples")
    page.wait_for_selector(".live.on")
    page.evaluate("window.__notReloaded = true")
    other = context.new_page()
    capture(other, kiosk, "S-LIVE-1,,")
    page.wait_for_selector('[data-sample="S-LIVE-1"]', timeout=10_000)
    assert page.evaluate("window.__notReloaded") is True
    other.close()


def test_reread_supersedes_the_first_read(page: Any, kiosk: Kiosk) -> None:
    first = capture(page, kiosk, "S-200,SUB-1,reread me")
    page.click("#reread")
    newer_url = re.compile(r"/ui/runs/(?!" + first + r")[0-9a-f-]+$")
    page.wait_for_url(newer_url, timeout=READ_TIMEOUT_MS)
    second = page.url.rsplit("/", 1)[1]
    assert second != first
    newer = run_json(page, kiosk, second)
    older = run_json(page, kiosk, first)
    assert newer["plate_id"] == older["plate_id"]
    assert older["status"] == "superseded" and older["superseded_by"] == second
    # The old page tells whoever still looks at it, and links to the newer read.
    page.goto(f"{kiosk.url}/ui/runs/{first}")
    page.wait_for_selector("#r-notice:not([hidden]) a")
    assert page.get_attribute("#r-notice a", "href") == f"/ui/runs/{second}"


def test_supervisor_deletes_a_run_with_the_pin(page: Any, kiosk: Kiosk) -> None:
    run_id = capture(page, kiosk, "S-300,,to delete")
    page.click("#delete")
    page.click('[data-reason="result.reason_bad_image"]')
    enter_pin(page, "9999")  # wrong first: the dialog says so and stays
    page.wait_for_selector("#pin-msg.error-text")
    assert run_json(page, kiosk, run_id)["status"] == "current"
    for _ in SUPERVISOR_PIN:
        page.click('.pin [aria-label="backspace"]')
    enter_pin(page, SUPERVISOR_PIN)
    page.wait_for_selector("#r-status.deleted")
    run = run_json(page, kiosk, run_id)
    assert run["status"] == "deleted"
    assert run["deleted_reason"] == "Bad image"
    assert page.is_disabled("#delete") and page.is_disabled("#reread")
    page.wait_for_selector("#supervisor-badge:not([hidden])")


def test_calibration_drag_and_save(page: Any, kiosk: Kiosk) -> None:
    capture(page, kiosk, "S-CAL,,frame to calibrate on")  # the newest frame is the backdrop
    before = page.context.request.get(f"{kiosk.url}/api/calibration").json()
    page.goto(f"{kiosk.url}/ui/calibration")
    page.wait_for_selector("#grid-svg image")
    line = page.locator('line[data-kind="columns"][data-index="3"]')
    box = line.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(x + 3 * step, y, steps=2)
    page.mouse.up()
    moved = float(line.get_attribute("x1") or 0)
    assert moved > before["columns"][3]
    page.click("#save-grid")
    enter_pin(page, SUPERVISOR_PIN)  # each test signs in afresh: not yet a supervisor
    page.wait_for_selector("#banner.info:not([hidden])")
    after = page.context.request.get(f"{kiosk.url}/api/calibration").json()
    assert after["columns"][3] == pytest.approx(moved, abs=0.11)
    assert after["columns"][:3] == before["columns"][:3]
    assert after["columns"][4:] == before["columns"][4:]
    assert after["rows"] == before["rows"]
    assert after["grid_id"] != before["grid_id"]


def test_language_switch_persists(page: Any, kiosk: Kiosk) -> None:
    page.goto(f"{kiosk.url}/ui/capture")
    page.click('[data-lang="th"]')
    page.wait_for_selector('html[lang="th"]')
    assert page.inner_text('[data-nav="capture"]') == "ถ่ายเพลต"
    assert page.inner_text("#capture-btn") == "ถ่ายภาพ"
    page.goto(f"{kiosk.url}/ui/status")  # another page, same choice
    assert page.get_attribute("html", "lang") == "th"
    page.wait_for_function("() => document.getElementById('st-camera').textContent !== '…'")
    assert re.search(r"[\u0E00-\u0E7F]", page.inner_text("#st-camera"))
    page.click('[data-lang="en"]')
    page.wait_for_selector('html[lang="en"]')
    assert page.inner_text('[data-nav="capture"]') == "Capture"


def test_errors_are_shown_in_operator_words(page: Any, kiosk: Kiosk) -> None:
    page.goto(f"{kiosk.url}/ui/capture")
    page.click("#capture-btn")  # no sample number
    assert page.inner_text("#banner-text") == "Enter the sample number first."
    page.fill("#sample", "---")
    page.click("#capture-btn")
    page.wait_for_selector("#banner.error:not([hidden])", timeout=READ_TIMEOUT_MS)
    text = page.inner_text("#banner-text")
    assert "sample number" in text.lower()
    assert "Traceback" not in text and "{" not in text
    assert page.url.endswith("/ui/capture")
    assert not page.is_disabled("#capture-btn")  # the operator can correct and retry


def test_a_missing_camera_is_explained_in_the_chosen_language(
    page: Any, kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The camera is the one part absent here: make the real capture path meet a dead one.
    def dead_camera() -> Any:
        raise CaptureUnavailable(message="The camera is not answering. Check its cable.")

    monkeypatch.setattr(kiosk.appliance.intake.source, "grab", dead_camera)
    page.context.add_cookies([{"name": "mp_lang", "value": "th", "url": kiosk.url}])
    page.goto(f"{kiosk.url}/ui/capture")
    page.fill("#sample", "S-400")
    page.click("#capture-btn")
    page.wait_for_selector("#banner.error:not([hidden])")
    text = page.inner_text("#banner-text")
    assert text.startswith("กล้องไม่ตอบสนอง")  # our Thai words first
    assert "Check its cable" in text  # then the appliance's own detail for support
    assert page.input_value("#sample") == "S-400"  # nothing typed is lost


def test_live_preview_streams_mjpeg(
    page: Any, kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = plates.plate_image(plates.PLATE_A)
    monkeypatch.setattr(kiosk.appliance.intake.source, "preview_frame", lambda: frame)
    page.goto(f"{kiosk.url}/ui/capture")
    page.wait_for_selector("#preview:not([hidden])")
    assert page.get_attribute("#preview", "src") == "/api/capture/preview.mjpg"
    page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")
    assert page.evaluate("document.getElementById('preview').naturalWidth") == 640
    assert page.is_hidden("#no-preview")


def test_fields_can_be_typed_on_the_on_screen_keypad(page: Any, kiosk: Kiosk) -> None:
    page.goto(f"{kiosk.url}/ui/capture")
    page.tap("#submission")
    page.wait_for_selector(".keypad .keypad-display")
    for key in ["S", "U", "B", "-", "4", "2"]:
        page.locator(".keypad .key", has_text=re.compile(f"^{re.escape(key)}$")).first.tap()
    page.locator(".keypad .key", has_text="⌫").tap()
    assert page.inner_text(".keypad-display") == "SUB-4"
    page.locator(".keypad .key", has_text="Done").tap()
    assert page.is_hidden(".keypad")
    assert page.input_value("#submission") == "SUB-4"


def test_a_finger_drags_a_row_line_and_undo_restores_it(page: Any, kiosk: Kiosk) -> None:
    capture(page, kiosk, "S-TOUCH,,frame")
    page.goto(f"{kiosk.url}/ui/calibration")
    page.wait_for_selector("#grid-svg image")
    line = page.locator('line[data-kind="rows"][data-index="2"]')
    start = float(line.get_attribute("y1") or 0)
    box = line.bounding_box()
    assert box is not None
    # Real touch events (not a mouse): what a gloved finger on the kiosk sends.
    x, y = box["x"] + box["width"] * 0.4, box["y"] + box["height"] / 2 + 6  # a near miss grabs
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for step in range(1, 6):
        point = {"x": x, "y": y + 4 * step}
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    moved = float(line.get_attribute("y1") or 0)
    assert moved > start
    assert "selected" in (line.get_attribute("class") or "")
    page.click("#nudge-plus")
    assert float(line.get_attribute("y1") or 0) > moved
    page.click("#reset")
    assert float(line.get_attribute("y1") or 0) == start


def test_annotated_image_opens_and_zooms(page: Any, kiosk: Kiosk) -> None:
    capture(page, kiosk, "S-ZOOM,,")
    page.click("#image-btn")
    page.wait_for_selector("#zoom:not([hidden])")
    assert (page.get_attribute("#zoom-img", "src") or "").endswith("/images/annotated")
    # Sized (fitted to the screen) once the image has loaded.
    page.wait_for_function("() => document.getElementById('zoom-img').style.width !== ''")
    width = page.evaluate("document.getElementById('zoom-img').getBoundingClientRect().width")
    page.click("#zoom-in")
    zoomed = page.evaluate("document.getElementById('zoom-img').getBoundingClientRect().width")
    assert zoomed == pytest.approx(width * 1.5, rel=0.02)
    page.click("#zoom-close")
    assert page.is_hidden("#zoom")


def test_samples_search_filters_the_history(page: Any, kiosk: Kiosk) -> None:
    for sample in ("S-FIND-1", "S-OTHER-1"):
        capture(page, kiosk, f"{sample},,")
    page.goto(f"{kiosk.url}/ui/samples")
    page.wait_for_selector('[data-sample="S-OTHER-1"]')
    page.fill("#search", "FIND")
    page.wait_for_selector('[data-sample="S-OTHER-1"]', state="detached")
    assert page.locator("[data-sample]").all_inner_texts()[0].startswith("S-FIND-1")
    page.click('[data-sample="S-FIND-1"]')
    page.wait_for_url(f"{kiosk.url}/ui/samples/S-FIND-1")
    page.wait_for_selector("#chart svg rect.bar", state="attached")
    assert page.locator("#runs [data-run]").count() == 1
    assert page.inner_text('[data-stat="stat.n"]') != "—"


def test_supervisor_changes_settings(page: Any, kiosk: Kiosk) -> None:
    page.goto(f"{kiosk.url}/ui/settings")
    page.wait_for_function("() => document.getElementById('start_dilution').value !== ''")
    page.fill("#start_dilution", "8")
    page.click('[data-col="12"]')
    page.click("#save")
    enter_pin(page, SUPERVISOR_PIN)
    page.wait_for_selector("#banner.info:not([hidden])")
    now = page.context.request.get(f"{kiosk.url}/api/settings").json()
    assert now["start_dilution"] == 8 and now["control_columns"] == [12]
    # Put them back so later reads use the defaults (the session is still elevated).
    page.fill("#start_dilution", "10")
    page.click('[data-col="12"]')
    page.click("#save")
    page.wait_for_function(
        "() => document.querySelector('[data-col=\"12\"]').getAttribute('aria-pressed') === 'false'"
    )
    page.wait_for_selector("#banner.info:not([hidden])")
    assert page.context.request.get(f"{kiosk.url}/api/settings").json()["start_dilution"] == 10


def test_a_grid_made_on_another_frame_size_is_shown_scaled(page: Any, kiosk: Kiosk) -> None:
    req = page.context.request
    capture(page, kiosk, "S-SCALE,,")
    grid = req.get(f"{kiosk.url}/api/calibration").json()
    doubled = {
        "columns": [v * 2 for v in grid["columns"]],
        "rows": [v * 2 for v in grid["rows"]],
        "image_width": grid["image_width"] * 2,
        "image_height": grid["image_height"] * 2,
        "format_version": 3,
    }
    assert req.post(f"{kiosk.url}/api/auth/elevate", data={"pin": SUPERVISOR_PIN}).ok
    try:
        assert req.put(f"{kiosk.url}/api/calibration", data=doubled).ok
        page.goto(f"{kiosk.url}/ui/calibration")
        page.wait_for_selector("#grid-svg image")
        box = page.get_attribute("#grid-svg", "viewBox")
        assert box == f"0 0 {grid['image_width']} {grid['image_height']}"
        x = float(page.get_attribute('line[data-kind="columns"][data-index="5"]', "x1") or 0)
        assert x == pytest.approx(grid["columns"][5], abs=0.11)
    finally:
        original = {k: grid[k] for k in ("columns", "rows", "image_width", "image_height")}
        assert req.put(f"{kiosk.url}/api/calibration", data={**original, "format_version": 3}).ok


def test_the_same_picture_twice_shows_the_earlier_result(
    page: Any, kiosk: Kiosk, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = capture(page, kiosk, "S-DUP,,")
    raw = page.context.request.get(f"{kiosk.url}/api/runs/{first}/images/raw").body()
    again = Frame(data=raw, filename="again.jpg", source="files")
    monkeypatch.setattr(kiosk.appliance.intake.source, "grab", lambda: again)
    page.goto(f"{kiosk.url}/ui/capture")
    page.fill("#sample", "S-DUP")
    page.click("#capture-btn")
    page.wait_for_url(f"{kiosk.url}/ui/runs/{first}?duplicate=1", timeout=READ_TIMEOUT_MS)
    page.wait_for_selector("#banner.info:not([hidden])")
    assert "read before" in page.inner_text("#banner-text")
    assert (
        page.context.request.get(f"{kiosk.url}/api/runs?sample_number=S-DUP").json()["total"] == 1
    )


def test_the_device_secret_can_be_typed_on_the_keypad(browser: Any, kiosk: Kiosk) -> None:
    ctx = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    try:
        page = ctx.new_page()
        page.goto(f"{kiosk.url}/ui/sign-in")
        page.tap("#secret")
        page.wait_for_selector(".keypad .keypad-display")
        for ch in OPERATOR_SECRET:
            if ch.isalpha() and (ch.isupper() != (page.inner_text("#keypad-case") == "abc")):
                page.tap("#keypad-case")  # the key shows the case it switches to
            page.locator(".keypad .key", has_text=re.compile(f"^{re.escape(ch)}$")).first.tap()
        assert page.inner_text(".keypad-display") == "•" * len(OPERATOR_SECRET)
        page.locator(".keypad .key", has_text="Done").tap()
        page.click("#sign-in")
        page.wait_for_url(f"{kiosk.url}/ui/capture")
    finally:
        ctx.close()


def test_proposed_grid_is_shown_for_review_not_saved(page: Any, kiosk: Kiosk) -> None:
    capture(page, kiosk, "S-PROPOSE,,")
    before = page.context.request.get(f"{kiosk.url}/api/calibration").json()
    page.goto(f"{kiosk.url}/ui/calibration")
    page.wait_for_selector("#grid-svg image")
    page.click("#propose")
    enter_pin(page, SUPERVISOR_PIN)
    page.wait_for_function(
        "() => document.getElementById('cal-msg').textContent.startsWith('Proposed grid shown')"
    )
    assert page.locator('line[data-kind="columns"]').count() == 13
    assert page.locator('line[data-kind="rows"]').count() == 9
    # Only Save stores it: the grid in use is unchanged until then.
    after = page.context.request.get(f"{kiosk.url}/api/calibration").json()
    assert after["grid_id"] == before["grid_id"]


def test_a_read_held_for_review_shows_a_banner(page: Any, kiosk: Kiosk) -> None:
    import cv2
    import numpy as np

    from edge.schemas import RunRequest

    grey = cv2.imencode(".jpg", np.full((600, 800, 3), 128, np.uint8))[1].tobytes()
    ticket = kiosk.appliance.intake.submit_image(
        grey, "grey.jpg", RunRequest(sample_number="S-REVIEW")
    )
    state = kiosk.appliance.intake.wait(ticket.id, READ_TIMEOUT_MS / 1000)
    assert state.state == "done" and state.run_id, state
    page.goto(f"{kiosk.url}/ui/runs/{state.run_id}")
    page.wait_for_selector("#r-review:not([hidden])")
    banner = page.inner_text("#r-review")
    assert banner.startswith("Needs review") and "does not look like a plate" in banner
    assert page.inner_text("#r-status") == "needs review"
    assert page.locator("#rows tbody tr.excluded").count() == 8
    run = run_json(page, kiosk, state.run_id)
    assert run["needs_review"] and run["rows_counted"] == 0
