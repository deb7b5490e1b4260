"""How a result is shown, the same on the appliance's touchscreen and the cloud dashboard.

Both sides render the same facts; a lab comparing the two must never see `20480` on one and
`≥ 20480` on the other, or one colour for `invalid` here and another there. This module is the
one place for what both render:

* :func:`titre_text`: censored titres say so: ``≥ 20480`` when every test column flows (the
  true titre is at least the last dilution), ``< 10`` below the first dilution
  (``no_inhibition``), ``—`` for no value;
* :data:`WELL_STYLES` and :func:`well_css`: the colours of the four well states (the CSS block
  both stylesheets carry between the markers :data:`CSS_BEGIN` / :data:`CSS_END`;
  `python -m core.present` prints it, a test keeps both files in step);
* :func:`bytes_text`: binary units (KiB, MiB, GiB: 1024-based, as `df -h` and the disk are);
* :data:`FLAG_LABELS` / :func:`flag_text`: the words for row, well and run flags;
* :func:`short_id` / :func:`name_or_id`: a name where one is known, never a bare UUID.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

NO_VALUE = "—"
CSS_BEGIN = "/* core.present well states: begin (generated: python -m core.present) */"
CSS_END = "/* core.present well states: end */"


@dataclass(frozen=True)
class WellStyle:
    background: str
    border: str
    text: str
    border_style: str = "solid"


# Flowing (the titre's "positive") is the strong colour; unread is visibly empty (dashed);
# invalid is amber, distinct from both read states and from the red/pink pair for
# red-green colour-blind readers.
WELL_STYLES: dict[str, WellStyle] = {
    "flowing": WellStyle("#b8322e", "#7d1a14", "#ffffff"),
    "agglutinated": WellStyle("#f3c9c5", "#c98d88", "#5a1512"),
    "invalid": WellStyle("#f0a500", "#9a6a00", "#2b1d00"),
    "unread": WellStyle("#ffffff", "#8a929c", "#4f5660", "dashed"),
}

# English words for the flags; the appliance's `edge/ui/translations/en.json` ("flag.*") holds
# the same (a test checks), its other languages translate them.
FLAG_LABELS: dict[str, str] = {
    # row flags (core.titre.ROW_FLAGS)
    "skipped": "skipped well",
    "no_inhibition": "no inhibition",
    "all_inhibited": "all inhibited",
    "unread": "unread well",
    "review": "held for review",
    # well flags (core.wells.WELL_FLAGS)
    "multiple": "several boxes",
    "low_confidence": "low confidence",
    "no_well": "no well here",
}

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _group(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def titre_text(
    titre: float | None, flags: Iterable[str] = (), *, start_dilution: int | None = None
) -> str:
    """A row's titre as a person reads it: censored values carry ``≥`` / ``<``."""
    flags = tuple(flags)
    if titre is None:
        if "no_inhibition" in flags and start_dilution:
            return f"< {start_dilution}"
        return NO_VALUE
    text = _group(titre)
    return f"≥ {text}" if "all_inhibited" in flags else text


def bytes_text(n: int | None) -> str:
    """``512 B``, ``1.5 KiB`` .. ``3.2 GiB`` (1024-based; the unit says so)."""
    if n is None:
        return NO_VALUE
    value = float(n)
    for unit in _BYTE_UNITS:
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def flag_text(flag: str) -> str:
    """The words for a flag; an unknown one (a newer appliance's) reads as itself."""
    return FLAG_LABELS.get(flag, flag.replace("_", " "))


def short_id(value: object) -> str:
    """The first 8 characters of an id, for when nothing better is known."""
    text = str(value)
    return text if len(text) <= 9 else f"{text[:8]}…"


def name_or_id(value: object, names: Mapping[str, str]) -> str:
    """The name of an id if known (``names`` maps ``str(id)`` to a name), else its short id."""
    if value is None or value == "":
        return NO_VALUE
    return names.get(str(value)) or short_id(value)


def well_css(selector: str = ".well") -> str:
    """The CSS rules for the well states, between the markers, as both stylesheets hold them."""
    lines = [CSS_BEGIN]
    for state, s in WELL_STYLES.items():
        lines.append(
            f"{selector}.{state} {{ background: {s.background}; "
            f"border: 2px {s.border_style} {s.border}; color: {s.text}; }}"
        )
    lines.append(CSS_END)
    return "\n".join(lines) + "\n"


def replace_css_block(css: str, selector: str = ".well") -> str:
    """``css`` with its generated block replaced by the current one (appended if absent)."""
    block = well_css(selector)
    start, end = css.find(CSS_BEGIN), css.find(CSS_END)
    if start < 0 or end < start:
        return css.rstrip("\n") + "\n\n" + block
    return css[:start] + block + css[end + len(CSS_END) :].lstrip("\n")


if __name__ == "__main__":  # pragma: no cover
    print(well_css(), end="")  # paste between the markers (core does no file I/O)
