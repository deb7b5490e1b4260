from __future__ import annotations

import pytest

from core import present
from core.titre import ROW_FLAGS
from core.wells import WELL_FLAGS, WELL_STATES


@pytest.mark.parametrize(
    ("titre", "flags", "start", "text"),
    [
        (20480, ("all_inhibited",), 10, "≥ 20480"),  # censored at the last dilution
        (None, ("no_inhibition",), 10, "< 10"),  # below the first dilution
        (None, ("no_inhibition",), 8, "< 8"),
        (160, (), 10, "160"),
        (160.0, ("skipped",), 10, "160"),
        (None, ("unread",), 10, "—"),
        (None, ("no_inhibition",), None, "—"),  # start unknown: say nothing rather than guess
    ],
)
def test_titre_text_says_when_a_titre_is_censored(
    titre: float | None, flags: tuple[str, ...], start: int | None, text: str
) -> None:
    assert present.titre_text(titre, flags, start_dilution=start) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (500 * 1024**2, "500.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (None, "—"),
    ],
)
def test_bytes_are_binary_units(n: int | None, text: str) -> None:
    assert present.bytes_text(n) == text


def test_every_state_and_flag_has_its_presentation() -> None:
    assert set(present.WELL_STYLES) == set(WELL_STATES)
    assert set(ROW_FLAGS) | set(WELL_FLAGS) <= set(present.FLAG_LABELS)
    assert present.flag_text("new_flag") == "new flag"  # a newer appliance's flag still reads
    css = present.well_css()
    assert css.startswith(present.CSS_BEGIN) and css.rstrip().endswith(present.CSS_END)
    assert all(f".well.{s} " in css for s in WELL_STATES)


def test_names_instead_of_ids() -> None:
    uid = "5b8f2c1e-0d6a-4a57-9d43-2a1f0c3b9e77"
    assert present.name_or_id(uid, {uid: "ana@lab.example"}) == "ana@lab.example"
    assert present.name_or_id(uid, {}) == "5b8f2c1e…"
    assert present.name_or_id(None, {}) == "—"


def test_replace_css_block_is_idempotent() -> None:
    css = ".a { color: red; }\n"
    once = present.replace_css_block(css)
    assert once.count(present.CSS_BEGIN) == 1 and present.replace_css_block(once) == once
