"""A plate that moves to another sample: every sample that gains or loses a current read is
recomputed and re-exported in the change's transaction (issue 16 point 2)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from edge.app import Appliance
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, fake_detector, jpeg, plate_image


def wait_done(app: Appliance, ticket_id: str) -> str:
    state = app.intake.wait(ticket_id, timeout=30)
    assert state.state == "done" and state.run_id, state
    return state.run_id


def capture(app: Appliance, sample: str, seed: int, plate_id: str | None = None) -> str:
    req = RunRequest(sample_number=sample, operator="ann", plate_id=plate_id)
    return wait_done(
        app, app.intake.submit_image(jpeg(plate_image(PLATE_A, seed=seed)), "p.jpg", req).id
    )


def figures(path: Path) -> dict[str, str]:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    return {r[2]: r[3] for r in rows[1:]}


def newest(share: Path, sample: str) -> Path:
    files = list(share.glob(f"{sample}*.csv"))
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def test_a_moved_plate_leaves_its_old_sample_and_its_csv(app: Appliance) -> None:
    first = capture(app, "S1", seed=1)
    assert app.runs.get_sample("S1").plates == 1
    plate = app.runs.get_run(first).plate_id
    moved = capture(app, "S2", seed=2, plate_id=plate)  # the operator fixed the sample number
    assert app.runs.get_run(first).status == "superseded"
    s1, s2 = app.runs.get_sample("S1"), app.runs.get_sample("S2")
    assert s1.plates == 0 and sum(s1.distribution.values()) == 0
    assert s2.plates == 1 and sum(s2.distribution.values()) == 8
    assert figures(app.settings.share_dir / "S1.csv")["N"] == "0"
    assert figures(app.settings.share_dir / "S2.csv")["N"] == "8"
    assert s1.csv is not None and not s1.csv.pending

    again = wait_done(app, app.runs.reread(moved, actor="sup").id)  # a re-read keeps it in S2
    assert app.runs.get_sample("S1").plates == 0 and app.runs.get_sample("S2").plates == 1
    assert app.runs.get_run(again).sample_number == "S2"

    app.runs.delete_run(again, actor="sup", reason="broken plate")
    assert app.runs.get_sample("S1").plates == 0 and app.runs.get_sample("S2").plates == 0
    assert figures(app.settings.share_dir / "S2.csv")["N"] == "0"
    assert sorted(p.name for p in app.settings.share_dir.glob("*.csv")) == ["S1.csv", "S2.csv"]


def test_per_save_naming_writes_a_newest_file_that_drops_the_plate(
    make_app: Callable[..., Appliance], make_settings: SettingsFactory
) -> None:
    app = make_app(make_settings(detector=fake_detector(PLATE_A), share={"naming": "per_save"}))
    first = capture(app, "S1", seed=1)
    capture(app, "S2", seed=2, plate_id=app.runs.get_run(first).plate_id)
    s1_files = list(app.settings.share_dir.glob("S1_*.csv"))
    assert len(s1_files) == 2  # one per save, never overwritten
    assert figures(newest(app.settings.share_dir, "S1_"))["N"] == "0"
    assert figures(newest(app.settings.share_dir, "S2_"))["N"] == "8"


def test_the_same_image_under_a_corrected_number_moves_the_plate(app: Appliance) -> None:
    data = jpeg(plate_image(PLATE_A, seed=7))

    def submit(sample: str) -> str:
        return wait_done(
            app, app.intake.submit_image(data, "p.jpg", RunRequest(sample_number=sample)).id
        )

    first = submit("S1")
    assert submit("S1") == first  # the same bytes under the same number: idempotent
    moved = submit("S2")  # the operator corrects the number and sends the file again
    assert moved != first and app.runs.get_run(moved).plate_id == app.runs.get_run(first).plate_id
    assert app.runs.get_run(first).status == "superseded"
    assert app.runs.get_sample("S1").plates == 0 and app.runs.get_sample("S2").plates == 1
    assert figures(app.settings.share_dir / "S1.csv")["N"] == "0"
    assert submit("S2") == moved
