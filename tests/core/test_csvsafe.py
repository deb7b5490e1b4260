"""The product's one CSV writer neutralises formula-like text (issue 17, point 3)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from core.csvsafe import Figure, csv_writer, neutralise

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ["=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20"]


def _write(row: list[object]) -> list[str]:
    buffer = io.StringIO(newline="")
    csv_writer(buffer).writerow(row)
    return next(csv.reader(io.StringIO(buffer.getvalue(), newline="")))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_formula_prefix_is_neutralised(prefix: str) -> None:
    payload = f'{prefix}HYPERLINK("http://evil","x")'
    written = ("'" + payload).replace("\r", "\n")  # a line break inside a cell is "\n"
    assert _write([payload, "flag", payload]) == [written, "flag", written]
    assert neutralise(payload) == "'" + payload


def test_numbers_and_figures_stay_numbers() -> None:
    got = _write([3, -2, 1.5, -0.25, Figure("-1.0000"), Figure("5.80"), Figure(""), None, True])
    assert got == ["3", "-2", "1.5", "-0.25", "-1.0000", "5.80", "", "", "true"]


@pytest.mark.parametrize("bad", ["-1+1", "=1", "-cmd|' /C calc'!A0", "1e5", "+5"])
def test_a_figure_that_is_not_a_plain_number_is_neutralised(bad: str) -> None:
    assert _write([Figure(bad)]) == [neutralise(bad)]


def test_infinite_floats_are_written_empty() -> None:
    assert _write([float("inf"), float("nan")]) == ["", ""]


def test_every_csv_in_the_product_goes_through_csvsafe() -> None:
    """No module writes CSV rows around the neutralising writer."""
    offenders = []
    for path in [
        *ROOT.glob("core/**/*.py"),
        *ROOT.glob("edge/**/*.py"),
        *ROOT.glob("cloud/**/*.py"),
    ]:
        if path.name == "csvsafe.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bcsv\.(writer|DictWriter)\(", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_dashboards_sample_list_neutralises_device_flags(prefix: str) -> None:
    """Run flags come from the device: they were written as they came (cloud.web.pages)."""
    pytest.importorskip("fastapi")
    from cloud.web.pages import _list_csv

    site = "00000000-0000-0000-0000-000000000001"
    item = {
        "sample_number": "S-1",
        "submission_number": f"{prefix}SUB",
        "site_id": site,
        "n_runs": 1,
        "n_plates": 1,
        "rows_total": 8,
        "gmt": 40.0,
        "flags": [f"{prefix}cmd|' /C calc'!A0"],
        "first_read_at": "",
        "last_read_at": "",
    }
    body = _list_csv([item], [{"id": site, "name": f"{prefix}Lab"}]).body
    rows = list(csv.reader(io.StringIO(bytes(body).decode("utf-8"), newline="")))
    sample = dict(zip(rows[0], rows[1], strict=True))
    nl = prefix.replace("\r", "\n")
    assert sample["flags"] == f"'{nl}cmd|' /C calc'!A0"
    assert sample["submission_number"] == f"'{nl}SUB"
    assert sample["site"] == f"'{nl}Lab"
    assert sample["gmt"] == "40.00" and sample["rows"] == "8"
