"""The appliance's API gives each row's titre as both UIs show it (`core.present`)."""

from __future__ import annotations

from collections.abc import Callable

from edge.app import Appliance
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import fake_detector, jpeg, plate_image

ENDPOINTS = [12, 0, 5, 5, 5, 5, 5, 5]


def test_censored_titres_say_so(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    app = make_app(make_settings(detector=fake_detector(ENDPOINTS)))
    data = jpeg(plate_image(ENDPOINTS))
    state = app.intake.wait(
        app.intake.submit_image(data, "p.jpg", RunRequest(sample_number="S-1")).id, 30
    )
    assert state.state == "done" and state.run_id, state
    rows = app.runs.get_run(state.run_id).rows
    assert [r.titre_text for r in rows[:3]] == ["≥ 20480", "< 10", "160"]
