from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.plate import PLATE_96, PLATE_384
from core.titre import CountingPolicy, DilutionSettings, RowResult, row_results, titre_for
from tests.core.helpers import calls_from_rows, endpoint_pattern, rows_for


def test_titre_formula() -> None:
    d = DilutionSettings()
    assert [titre_for(e, d) for e in (0, 1, 2, 5, 12)] == [None, 10, 20, 160, 20480]
    assert titre_for(3, DilutionSettings(start_dilution=8, factor=2)) == 32
    assert titre_for(2, DilutionSettings(start_dilution=2, factor=3)) == 6
    with pytest.raises(ValueError, match="not a test column"):
        titre_for(12, DilutionSettings(control_columns=(12,)))


@pytest.mark.parametrize(
    ("settings", "fmt"),
    [
        (DilutionSettings(), PLATE_96),
        (DilutionSettings(start_dilution=8, factor=3, control_columns=(1, 12)), PLATE_96),
        (DilutionSettings(start_dilution=5, factor=10, control_columns=(2, 7, 24)), PLATE_384),
    ],
)
def test_titres_are_the_series_columns(settings: DilutionSettings, fmt) -> None:  # type: ignore[no-untyped-def]
    # The cached series (core.wire checks every message's rows against it) is the formula:
    # the k-th test column holds start x factor^(k-1); control columns have none.
    cols = [c for c in range(1, fmt.cols + 1) if c not in settings.control_columns]
    expected = {c: settings.start_dilution * settings.factor**k for k, c in enumerate(cols)}
    assert dict(settings.titres(fmt)) == expected
    assert settings.test_columns(fmt) == tuple(cols)
    assert settings.counted_titres(fmt) == {settings.start_dilution / 2.0} | {
        float(t) for t in expected.values()
    }
    assert all(titre_for(c, settings, fmt) == t for c, t in expected.items())
    with pytest.raises(TypeError):
        settings.titres(fmt)[cols[0]] = 1  # type: ignore[index]  # shared: read-only
    assert settings.titres(fmt)[cols[0]] == settings.start_dilution


def test_series_errors_are_raised_every_time() -> None:
    bad = DilutionSettings(control_columns=(13,))
    for _ in range(2):  # not cached away after the first call
        with pytest.raises(ValueError, match="not on a 12-column plate"):
            bad.titres(PLATE_96)
        with pytest.raises(ValueError, match="not on a 12-column plate"):
            bad.counted_titres(PLATE_96)
        with pytest.raises(ValueError, match="not on a 12-column plate"):
            titre_for(3, bad, PLATE_96)


def test_clean_row() -> None:
    (row,) = rows_for(["FFFFFAAAAAAA"])[:1]
    assert (row.label, row.endpoint, row.titre, row.flags) == ("A", 5, 160, ())
    assert row.counted and row.counted_titre == 160.0 and row.exclusion_reason is None


def test_no_inhibition_counts_at_half_the_start() -> None:
    row = rows_for(["AAAAAAAAAAAA"])[0]
    assert row.endpoint == 0 and row.titre is None and row.flags == ("no_inhibition",)
    assert row.counted and row.counted_titre == 5.0
    excl = row_results(
        calls_from_rows(["A" * 12]), PLATE_96, policy=CountingPolicy(no_inhibition="exclude")
    )[0]
    assert not excl.counted and excl.exclusion_reason == "no_inhibition"


def test_all_inhibited_is_censored_at_the_bound() -> None:
    row = rows_for(["F" * 12])[0]
    assert row.endpoint == 12 and row.titre == 20480 and row.flags == ("all_inhibited",)
    assert row.counted and row.counted_titre == 20480.0
    excl = row_results(
        calls_from_rows(["F" * 12]), PLATE_96, policy=CountingPolicy(censored="exclude")
    )[0]
    assert not excl.counted and excl.exclusion_reason == "all_inhibited"


def test_skipped_well_is_flagged_and_counted_by_default() -> None:
    row = rows_for(["FFAFFAAAAAAA"])[0]
    assert row.endpoint == 5 and row.flags == ("skipped",) and row.counted
    excl = row_results(
        calls_from_rows(["FFAFFAAAAAAA"]), PLATE_96, policy=CountingPolicy(skipped="exclude")
    )[0]
    assert excl.exclusion_reason == "skipped" and excl.counted_titre is None


@pytest.mark.parametrize(
    ("pattern", "endpoint"),
    [
        ("FFUFFAAAAAAA", 5),  # unread before the endpoint: it may hide a skip
        ("FFFFFUAAAAAA", 5),  # unread right after it: the endpoint is not decided
        ("FFFFFIAAAAAA", 5),  # an invalid well is not readable either
        ("FFFFFAAUAAAA", 5),  # unread well after the endpoint: a skip may follow it
        ("FFFFFAAAAAAU", 5),  # a trailing unread well could still be the last flowing one
        ("UAAAAAAAAAAA", 0),  # cannot tell no inhibition from a missed first well
        ("AUUUUUUUUUUU", 0),  # endpoint 0 with 11 unread wells is not "no inhibition"
        ("AAAAAAAAAAAI", 0),  # endpoint 0 decided only when every well is read
        ("UUUUUUUUUUUU", 0),
    ],
)
def test_unread_rows_are_excluded(pattern: str, endpoint: int) -> None:
    row = rows_for([pattern])[0]
    assert row.endpoint == endpoint and "unread" in row.flags
    assert not row.counted and row.exclusion_reason == "unread" and row.counted_titre is None


@pytest.mark.parametrize("pattern", ["FFFFFAAAAAAA", "AAAAAAAAAAAA", "FFAFFAAAAAAA", "F" * 12])
def test_fully_read_rows_are_decided(pattern: str) -> None:
    row = rows_for([pattern])[0]
    assert "unread" not in row.flags and row.counted


def test_unread_control_column_does_not_block() -> None:
    dil = DilutionSettings(control_columns=(12,))
    row = rows_for(["FFFAAAAAAAAU"], dilution=dil)[0]
    assert row.flags == () and row.counted and row.endpoint == 3


def test_missing_wells_count_as_unread() -> None:
    calls = calls_from_rows(["FFFAAAAAAAAA"])
    del calls["A2"]
    row = row_results(calls, PLATE_96)[0]
    assert "unread" in row.flags and not row.counted


def test_control_columns_are_excluded() -> None:
    dil = DilutionSettings(start_dilution=10, control_columns=(11, 12))
    row = rows_for(["FFFAAAAAAAFF"], dilution=dil)[0]
    assert row.endpoint == 3 and row.titre == 40 and row.flags == ()
    full = rows_for(["FFFFFFFFFFAA"], dilution=dil)[0]
    assert full.flags == ("all_inhibited",) and full.titre == 10 * 2**9
    first = DilutionSettings(start_dilution=10, control_columns=(1,))
    shifted = rows_for(["AFFAAAAAAAAA"], dilution=first)[0]
    assert shifted.endpoint == 3 and shifted.titre == 20  # column 3 is the 2nd dilution


def test_dilution_settings_validation() -> None:
    with pytest.raises(ValidationError):
        DilutionSettings(start_dilution=0)
    with pytest.raises(ValidationError):
        DilutionSettings(factor=1)
    with pytest.raises(ValidationError, match="repeat"):
        DilutionSettings(control_columns=(3, 3))
    with pytest.raises(ValidationError):
        DilutionSettings(control_columns=(0,))
    assert DilutionSettings(control_columns=(12, 1)).control_columns == (1, 12)
    with pytest.raises(ValueError, match="not on a 12-column plate"):
        DilutionSettings(control_columns=(13,)).test_columns(PLATE_96)
    with pytest.raises(ValueError, match="every column"):
        DilutionSettings(control_columns=tuple(range(1, 13))).test_columns(PLATE_96)


def test_384_rows() -> None:
    rows = rows_for([endpoint_pattern(e, 24) for e in range(16)], fmt=PLATE_384)
    assert [r.endpoint for r in rows] == list(range(16))
    assert rows[-1].label == "P" and rows[15].titre == 10 * 2**14


@pytest.mark.parametrize(
    "fields",
    [
        {"endpoint": 0, "titre": 10, "counted": True, "counted_titre": 10.0},
        {"endpoint": 2, "titre": None, "counted": True, "counted_titre": 5.0},
        {"endpoint": 2, "titre": 20, "counted": True, "counted_titre": None},
        {"endpoint": 2, "titre": 20, "counted": False, "counted_titre": None},
        {"endpoint": 2, "titre": 20, "counted": False, "exclusion_reason": "unread"},
        {
            "endpoint": 2,
            "titre": 20,
            "counted": True,
            "counted_titre": 20.0,
            "flags": ("skipped",) * 2,
        },
    ],
)
def test_row_result_must_be_consistent(fields: dict) -> None:
    with pytest.raises(ValidationError):
        RowResult(row=0, label="A", **fields)


def test_row_result_round_trips_through_json() -> None:
    for row in rows_for(["FFAFFAAAAAAA", "FFUAAAAAAAAA", "A" * 12, "F" * 12]):
        assert RowResult.model_validate_json(row.model_dump_json()) == row
