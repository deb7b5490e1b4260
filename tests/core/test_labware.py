from __future__ import annotations

import csv
import io
import os
import posixpath
import statistics as pystats
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.labware import (
    TEMPLATES,
    csv_filename,
    legacy_figures,
    neutralise,
    render_csv,
    render_csv_bytes,
    safe_sample_number,
)
from core.pooling import PlateRead, SampleSummary, pool_sample
from core.sanitize import SampleNumberError, clean_sample_number
from tests.core.helpers import endpoint_pattern, rows_for

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)

# DOMAIN.md's worked example: two plates of S-001 (row endpoints 5,6,5,7,4,6,5,— and
# 6,6,5,5,7,8,6,6). Written out by hand from the rules, not produced by the code under test.
LEGACY_EXPECTED = (
    b"SAMPLE_NUMBER,TEST_NUMBER,REPORTED_NAME,ENTRY\n"
    b"S-001,T001,1,0\n"
    b"S-001,T001,2,0\n"
    b"S-001,T001,3,0\n"
    b"S-001,T001,4,1\n"
    b"S-001,T001,5,5\n"
    b"S-001,T001,6,6\n"
    b"S-001,T001,7,2\n"
    b"S-001,T001,8,1\n"
    b"S-001,T001,9,0\n"
    b"S-001,T001,10,0\n"
    b"S-001,T001,11,0\n"
    b"S-001,T001,12,0\n"
    b"S-001,T001,GMT,5.8\n"
    b"S-001,T001,MEAN,1.25\n"
    b"S-001,T001,SD,2.01\n"
    b"S-001,T001,CV,1.60416126\n"
)


def summary_of(plates: list[list[int | None]], sample: str = "S-001") -> SampleSummary:
    reads = [
        PlateRead(
            run_id=uuid.uuid4(),
            sample_number=sample,
            plate_id=uuid.uuid4(),
            read_at=T0 + timedelta(minutes=i),
            rows=tuple(rows_for([endpoint_pattern(e) for e in endpoints])),
        )
        for i, endpoints in enumerate(plates)
    ]
    return pool_sample(sample, reads, n_cols=12)


WORKED = [[5, 6, 5, 7, 4, 6, 5, None], [6, 6, 5, 5, 7, 8, 6, 6]]


def test_legacy_template_reproduces_the_worked_example_byte_for_byte() -> None:
    data = render_csv_bytes(summary_of(WORKED), template="labware-legacy")
    assert data == LEGACY_EXPECTED
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data


def test_render_csv_writes_the_same_text_to_a_stream() -> None:
    stream = io.StringIO()
    render_csv(summary_of(WORKED), stream, template="labware-legacy")
    assert stream.getvalue().encode("utf-8") == LEGACY_EXPECTED


def test_default_template_has_the_correct_statistics() -> None:
    summary = summary_of(WORKED)
    text = render_csv_bytes(summary).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["SAMPLE_NUMBER", "TEST_NUMBER", "REPORTED_NAME", "ENTRY"]
    names = [r[2] for r in rows[1:]]
    assert names == [str(c) for c in range(1, 13)] + [
        "N", "GMT", "MEAN_LOG2", "SD_LOG2", "CV_PCT", "EXCLUDED"
    ]  # fmt: skip
    entries = {r[2]: r[3] for r in rows[1:]}
    st_ = summary.statistics
    assert entries["N"] == "16" and entries["EXCLUDED"] == "0"
    assert entries["GMT"] == f"{st_.gmt:.2f}" and entries["SD_LOG2"] == f"{st_.sd_log2:.4f}"
    assert entries["5"] == "5" and all(r[0] == "S-001" and r[1] == "T001" for r in rows[1:])


def test_default_template_leaves_missing_figures_empty() -> None:
    summary = summary_of([[3, None, None, None, None, None, None, None]])
    only_one = summary.model_copy(
        update={"statistics": summary.statistics.model_copy(update={"sd_log2": None})}
    )
    entries = {r[2]: r[3] for r in csv.reader(io.StringIO(render_csv_bytes(only_one).decode()))}
    assert entries["SD_LOG2"] == ""


def test_legacy_template_without_counts_does_not_divide_by_zero() -> None:
    figures = legacy_figures({str(c): 0 for c in range(13)}, 12)
    assert figures == {"GMT": "", "MEAN": "0.0", "SD": "0.0", "CV": ""}


def test_unknown_template_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CSV template 'xlsx'"):
        render_csv_bytes(summary_of(WORKED), template="xlsx")


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+31", "'+31"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("\uff1dcmd", "'\uff1dcmd"),
        ("S-001", "S-001"),
        ("", ""),
    ],
)
def test_neutralise(field: str, expected: str) -> None:
    assert neutralise(field) == expected


def test_formula_sample_number_is_neutralised_in_the_csv() -> None:
    summary = summary_of(WORKED, sample="=HYPERLINK(1)")
    for template in TEMPLATES:
        rows = list(csv.reader(io.StringIO(render_csv_bytes(summary, template=template).decode())))
        assert {r[0] for r in rows[1:]} == {"'=HYPERLINK(1)"}


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("S-001", "S-001"),
        ("  s 001/../x ", "s_001_x"),
        ("é-12", "e-12"),
        ("A..B", "A.B"),
        (".hidden", "hidden"),
        ("-=1+1", "1_1"),
        ("C:\\temp\\x", "C_temp_x"),
    ],
)
def test_safe_sample_number(text: str, token: str) -> None:
    assert safe_sample_number(text) == token


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 65, "65 characters long"),
        ("../..", "no letter or digit"),
        ("a\x00b", r"U\+0000"),
        ("a\u202eb", r"U\+202E"),
        ("中文", "cannot be made into a safe file name"),
        (None, "must be text"),
    ],
)
def test_unsafe_sample_numbers_are_refused(text: object, message: str) -> None:
    with pytest.raises(SampleNumberError, match=message):
        safe_sample_number(text)


def test_clean_sample_number() -> None:
    assert clean_sample_number("  S\u00a0001 ") == "S 001"
    assert clean_sample_number("e\u0301") == "\u00e9"  # NFC


def test_csv_filename() -> None:
    when = datetime(2026, 11, 26, 9, 30, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert csv_filename("S/001", when) == "S_001_20261126T083005123Z.csv"
    with pytest.raises(ValueError, match="timezone-aware"):
        csv_filename("S-001", datetime(2026, 1, 1))
    with pytest.raises(SampleNumberError):
        csv_filename("///", when)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_any_sample_number_is_a_safe_name_inside_the_share_or_refused(text: str) -> None:
    share = "/srv/share/labware"
    try:
        name = csv_filename(text, T0)
    except SampleNumberError:
        return
    assert "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name
    assert not name.startswith((".", "-"))
    assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in name)
    target = posixpath.normpath(posixpath.join(share, name))
    assert posixpath.dirname(target) == share
    assert os.path.basename(target) == name


spreadsheet_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64
)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(sample=spreadsheet_text)
def test_every_formula_like_field_is_neutralised(sample: str) -> None:
    try:
        cleaned = clean_sample_number(sample)
    except SampleNumberError:
        return
    summary = summary_of(WORKED, sample=cleaned)
    for template in TEMPLATES:
        data = render_csv_bytes(summary, template=template)
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        assert all(len(r) == 4 for r in rows)
        for field in (f for r in rows for f in r):
            if field.startswith(
                ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
            ):
                assert _is_number(field), field  # only a number we computed may start so
        assert {r[0] for r in rows[1:]} == {neutralise(cleaned)}


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=12, max_size=12))
def test_legacy_figures_match_the_reference_formulas(counts: list[int]) -> None:
    dist = {"0": 3, **{str(c): n for c, n in enumerate(counts, start=1)}}
    figures = legacy_figures(dist, 12)
    mean = pystats.fmean(counts)
    sd = pystats.pstdev(counts)
    assert float(figures["MEAN"]) == pytest.approx(mean, abs=0.005 + 1e-9)
    assert float(figures["SD"]) == pytest.approx(sd, abs=0.005 + 1e-9)
    if sum(counts) == 0:
        assert figures["GMT"] == figures["CV"] == ""
        return
    gmt = sum(c * n for c, n in enumerate(counts, start=1)) / sum(counts)  # "0" never counts
    assert float(figures["GMT"]) == pytest.approx(gmt, abs=0.005 + 1e-9)
    assert float(figures["CV"]) == pytest.approx(sd / mean, abs=5e-9 + 1e-12)
    assert all("e" not in v for v in figures.values())  # plain decimals, as the LIMS expects
