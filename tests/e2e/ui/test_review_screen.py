"""The review screen in headless Chromium against a real appliance: an operator taps a well,
its call cycles, Save makes edit 1 (the model's call kept) and rewrites the sample's LabWare
CSV, and Accept as read makes edit 2; the queue page lists runs to review. (Calls, titres and
the CSV's figures after a correction are checked in tests/edge.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.ui.kiosk import Kiosk

pytestmark = [pytest.mark.browser, pytest.mark.slow]

READ_TIMEOUT_MS = 60_000
CYCLE = {"flowing": "agglutinated", "agglutinated": "invalid", "invalid": "flowing"}


def read_plate(page: Any, kiosk: Kiosk, sample: str) -> str:
    req = page.context.request
    ticket = req.post(f"{kiosk.url}/api/capture", data={"sample_number": sample}).json()
    state = req.get(f"{kiosk.url}/api/tickets/{ticket['id']}?wait=60").json()
    assert state["state"] == "done", state
    return str(state["run_id"])


def run_json(page: Any, kiosk: Kiosk, run_id: str) -> dict[str, Any]:
    res = page.context.request.get(f"{kiosk.url}/api/runs/{run_id}")
    assert res.ok, res.text()
    data: dict[str, Any] = res.json()
    return data


def csv_writes(kiosk: Kiosk, sample: str) -> int:
    """How many times the sample's LabWare CSV was written into the share."""
    assert list(kiosk.share_dir.glob(f"{sample}*.csv")), f"no CSV for {sample} in the share"
    row = (
        kiosk.appliance.store.read()
        .execute("SELECT COUNT(*) FROM csv_files WHERE sample_number = ?", [sample])
        .fetchone()
    )
    return int(row[0])


def test_operator_taps_a_well_and_saves(page: Any, kiosk: Kiosk) -> None:
    run_id = read_plate(page, kiosk, "S-REVIEW-1")
    before = run_json(page, kiosk, run_id)
    assert before["status"] == "current" and before["edit"] == 0
    counted = not before["needs_review"]
    writes = csv_writes(kiosk, "S-REVIEW-1") if counted else 0
    a1 = next(w for w in before["wells"] if w["well_id"] == "A1")
    model = a1["state"]
    first = CYCLE.get(model, "flowing")  # an unread well goes to flowing
    second = CYCLE[first]

    page.goto(f"{kiosk.url}/ui/review/{run_id}")
    well = '#rv-plate .rv-well[data-well="A1"]'
    page.wait_for_selector(well)
    page.wait_for_selector("#rv-plate image")  # the plate photo under the grid
    assert page.locator("#rv-plate .rv-well").count() == len(before["wells"])
    assert page.locator("#rv-plate .rv-grid line").count() > 0
    assert page.get_attribute(well, "data-state") == model
    assert page.is_disabled("#rv-save")

    page.tap(well)
    assert page.get_attribute(well, "data-state") == first
    page.tap(well)
    assert page.get_attribute(well, "data-state") == second
    assert "A1" in page.inner_text("#rv-changes")
    assert not page.is_disabled("#rv-save")
    # The reviewer's name first: nothing is saved without it.
    page.fill("#rv-reviewer", "")
    page.tap("#rv-save")
    page.wait_for_selector("#rv-reviewer-error:not([hidden])")
    assert run_json(page, kiosk, run_id)["edit"] == 0
    page.fill("#rv-reviewer", "Ann Lee")
    page.tap("#rv-save")
    page.wait_for_selector("#banner:not([hidden])")
    assert "edit 1" in page.inner_text("#banner-text")
    # Wait for the edit number itself: the line also carries a time, whose digits a bare
    # "contains '2'" matched before the accept had landed (a flake seen in CI).
    page.locator("#rv-edit", has_text="(edit 1)").wait_for()
    assert "by Ann Lee" in page.inner_text("#rv-edit")

    after = run_json(page, kiosk, run_id)
    assert after["edit"] == 1 and after["reviewed_by"].startswith("Ann Lee (operator:")
    a1 = next(w for w in after["wells"] if w["well_id"] == "A1")
    assert (a1["state"], a1["model_state"]) == (second, model)
    assert page.get_attribute(well, "data-state") == second
    assert page.inner_text("#rv-changes") == ""
    if counted:
        assert csv_writes(kiosk, "S-REVIEW-1") == writes + 1

    page.reload()  # the name is remembered on this screen
    page.wait_for_selector(well)
    assert page.input_value("#rv-reviewer") == "Ann Lee"
    page.tap("#rv-accept")
    page.locator("#rv-edit", has_text="(edit 2)").wait_for()
    assert run_json(page, kiosk, run_id)["edit"] == 2


def test_the_queue_opens_a_held_run(page: Any, kiosk: Kiosk) -> None:
    run_id = read_plate(page, kiosk, "S-REVIEW-2")
    with kiosk.appliance.store.write() as db:  # held, as the plate gate stores such a read
        db.execute(
            "UPDATE runs SET needs_review = 1, review_reasons = '[\"grid_misfit\"]' "
            "WHERE run_id = ?",
            [run_id],
        )
    page.goto(f"{kiosk.url}/ui/review")
    link = f'#queue .row-link[data-run="{run_id}"]'
    page.wait_for_selector(link)
    assert page.locator("#queue .row-link").first.get_attribute("data-run") == run_id
    page.tap(link)
    page.wait_for_url(f"{kiosk.url}/ui/review/{run_id}")
    page.wait_for_selector("#rv-held:not([hidden])")
    assert not page.is_disabled("#rv-accept")
