"""The evaluation harness itself, with stand-in readers (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.plate import PLATE_96
from core.titre import row_results
from core.wells import WellCall
from models.evaluate import (
    BEGIN,
    END,
    Calls,
    Plate,
    _bucket,
    evaluate,
    markdown,
    stored_plates,
    truth_rows,
    update_card,
)
from models.synth.dataset import generate

# Stream 2020's first two plates are 1280x720: quick to render.
SEED = 2020


class TruthReader:
    """Reads every well right; `wrong` lists well ids to misread as agglutinated/flowing."""

    name = "truth stand-in"

    def __init__(self, wrong: tuple[str, ...] = ()) -> None:
        self.wrong = wrong

    def __call__(self, plate: Plate) -> Calls:
        calls = {}
        for w in plate.wells:
            state = w["state"]
            if w["well_id"] in self.wrong:
                state = "agglutinated" if state != "agglutinated" else "flowing"
            calls[w["well_id"]] = WellCall(
                well_id=w["well_id"], row=w["row"], col=w["col"], state=state
            )
        return calls, row_results(calls, PLATE_96)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plates")
    list(generate(out, 2, SEED))
    return out


@pytest.fixture(scope="module")
def perfect(data: Path) -> dict:
    return evaluate(TruthReader(), 2, SEED, data_dir=data, progress=False)


def test_a_perfect_reader_scores_one(perfect: dict) -> None:
    o = perfect["overall"]
    assert o["wells"] == 192 and o["rows"] == 16
    assert o["well_accuracy"] == 1.0
    assert o["row_exact_endpoint"] == 1.0
    assert o["row_flags_match"] == 1.0
    assert perfect["errors"] == []
    assert sum(sum(r.values()) for r in perfect["confusion"].values()) == 192
    assert all(perfect["confusion"][c]["unread"] == 0 for c in perfect["confusion"])
    assert perfect["by_variation"]["resolution"] == {
        "1280x720": {
            "plates": 2,
            "wells": 192,
            "well_accuracy": 1.0,
            "rows": 16,
            "row_exact_endpoint": 1.0,
        }
    }


def test_misread_wells_are_counted_and_listed(data: Path) -> None:
    report = evaluate(TruthReader(wrong=("A12", "H1")), 1, SEED, data_dir=data, progress=False)
    o = report["overall"]
    assert o["well_accuracy"] == pytest.approx(94 / 96)
    assert {e["well"] for e in report["errors"]} == {"A12", "H1"}
    assert all(e["plate"] == 0 for e in report["errors"])


def test_a_misread_last_well_changes_the_endpoint(data: Path) -> None:
    """An agglutinated A..H12 read as flowing moves that row's endpoint to 12: one row wrong."""
    (plate,) = list(stored_plates(data, SEED, range(1)))
    well = next(w for w in plate.wells if w["col"] == 11 and w["state"] == "agglutinated")
    report = evaluate(TruthReader(wrong=(well["well_id"],)), 1, SEED, data_dir=data, progress=False)
    assert report["overall"]["row_exact_endpoint"] == pytest.approx(7 / 8)


def test_truth_rows_use_the_last_flowing_column() -> None:
    wells = [
        {
            "well_id": f"{r}{c}",
            "row": i,
            "col": c - 1,
            "state": "flowing" if c <= 5 else "agglutinated",
        }
        for i, r in enumerate("ABCDEFGH")
        for c in range(1, 13)
    ]
    rows = truth_rows(wells)
    assert [r.endpoint for r in rows] == [5] * 8


def test_a_plate_missing_from_the_data_is_rendered(data: Path, tmp_path: Path) -> None:
    (stored,) = list(stored_plates(data, SEED, range(1, 2)))
    (rendered,) = list(stored_plates(tmp_path, SEED, range(1, 2)))  # empty folder: renders
    assert rendered.jpeg == stored.jpeg
    assert rendered.wells == stored.wells
    assert rendered.calibration == stored.calibration


def test_buckets() -> None:
    assert _bucket(0.0, (0.0, 0.01, 1.0)) == "0"
    assert _bucket(0.5, (0.0, 0.01, 1.0)) == "0.01-1"
    assert _bucket(5.0, (0.0, 0.01, 1.0)) == ">=1"


def test_markdown_and_card_section(perfect: dict, tmp_path: Path) -> None:
    text = markdown({**perfect, "decoder": "truth stand-in", "min_confidence": 0.5})
    assert "Well accuracy: 100.00 %" in text
    assert "| truth \\\\ predicted |" in text or "| truth \\ predicted |" in text
    card = tmp_path / "CARD.md"
    card.write_text(f"# card\\n{BEGIN}\\nold\\n{END}\\ntail\\n")
    update_card(card, text)
    body = card.read_text()
    assert "old" not in body and "Well accuracy: 100.00 %" in body and body.endswith("tail\\n")
    card.write_text("no markers")
    with pytest.raises(SystemExit):
        update_card(card, text)
