from __future__ import annotations

import pytest

from core.plate import PLATE_96, PLATE_384, WellIdError, plate_format


def test_96_well_layout() -> None:
    assert (PLATE_96.rows, PLATE_96.cols, PLATE_96.n_wells) == (8, 12, 96)
    assert PLATE_96.row_labels == tuple("ABCDEFGH")
    assert PLATE_96.col_labels == tuple(str(c) for c in range(1, 13))
    ids = PLATE_96.well_ids()
    assert ids[:3] == ["A1", "A2", "A3"] and ids[11:13] == ["A12", "B1"] and ids[-1] == "H12"
    assert len(set(ids)) == 96


def test_384_well_layout() -> None:
    assert (PLATE_384.rows, PLATE_384.cols) == (16, 24)
    assert PLATE_384.row_labels[-1] == "P"
    assert PLATE_384.well_ids()[-1] == "P24"
    assert len(set(PLATE_384.well_ids())) == 384


@pytest.mark.parametrize("fmt", [PLATE_96, PLATE_384])
def test_well_id_round_trip(fmt) -> None:
    for well_id in fmt.well_ids():
        assert fmt.well_id(*fmt.parse_well_id(well_id)) == well_id


def test_parse_well_id_examples() -> None:
    assert PLATE_96.parse_well_id("B7") == (1, 6)
    assert PLATE_96.parse_well_id("h12") == (7, 11)
    assert PLATE_384.parse_well_id("P24") == (15, 23)


@pytest.mark.parametrize("bad", ["", "7B", "I1", "A13", "A0", "A01", "AA1", "B-1", "A1 x", "Z9"])
def test_parse_well_id_rejects(bad: str) -> None:
    with pytest.raises(WellIdError):
        PLATE_96.parse_well_id(bad)


def test_well_id_out_of_range() -> None:
    with pytest.raises(WellIdError, match="outside"):
        PLATE_96.well_id(8, 0)
    with pytest.raises(WellIdError):
        PLATE_96.well_id(0, -1)


def test_plate_format_lookup() -> None:
    assert plate_format(96) is PLATE_96
    assert plate_format(384) is PLATE_384
    with pytest.raises(ValueError, match="unsupported plate format 48"):
        plate_format(48)
