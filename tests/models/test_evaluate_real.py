"""models.evaluate_real: reading the by-eye readings, the titres they allow, the skip message.

No real photo is used or needed here: the SOURCES.md text below is made up in the same layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.evaluate_real import PLATES, dilution_for, main, possible_titres, readings

ROW = "   ".join(
    [
        "F F F F F F ? A A A A A",
        "F F F F F F F F F A A A",
        "A A A A A A A A ? F F F",
        "F F F F F F A A",
    ]
)
SOURCES = (
    "# x\n\n## My reading of each well (F = ...)\n```\nheader line\n"
    + "\n".join([ROW] * 8)
    + "\n```\n"
)


def test_readings_parse_every_plate() -> None:
    letters = readings(SOURCES)
    assert set(letters) == {p.name for p in PLATES}
    assert all(len(v) == 96 for v in letters.values())
    assert letters["betagro_plate62_tilted"][:12] == list("FFFFFF?AAAAA")
    assert letters["smu_hi_crossreactivity_crop"][:12] == list("FFFFFFAA") + ["-"] * 4
    assert set(letters["betagro_empty_plate"]) == {"I"}
    assert set(letters["mcginley_plate2b_all_buttons"]) == {"F"}


def test_a_malformed_reading_block_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no reading block"):
        readings("# nothing here\n")
    with pytest.raises(ValueError, match="letters"):
        readings(SOURCES.replace(ROW, "F F F", 1))


def test_a_question_mark_allows_both_titres() -> None:
    letters = readings(SOURCES)
    plate = next(p for p in PLATES if p.name == "betagro_plate62_tilted")
    titres = possible_titres(letters[plate.name], dilution_for(plate))
    # F x6 then ?: endpoint column 6 (titre 320) or 7 (640), start dilution 10, factor 2.
    assert titres[0] == {320.0, 640.0}


def test_smu_counts_only_its_eight_columns() -> None:
    letters = readings(SOURCES)
    plate = next(p for p in PLATES if p.name == "smu_hi_crossreactivity_crop")
    titres = possible_titres(letters[plate.name], dilution_for(plate))
    assert titres[0] == {320.0}  # F x6 then A A: column 6


def test_the_empty_plate_has_no_countable_row() -> None:
    letters = readings(SOURCES)
    plate = next(p for p in PLATES if p.name == "betagro_empty_plate")
    assert possible_titres(letters[plate.name], dilution_for(plate)) == [{None}] * 8


def test_skips_with_a_message_without_the_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--real-dir", str(tmp_path / "absent")]) == 0
    assert "no real plate photos" in capsys.readouterr().out
