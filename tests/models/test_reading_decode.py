"""models.wells.reading.read_calls: per well (today's reading) and row decode side by side."""

from __future__ import annotations

import numpy as np

from core.rowdecode import RowDecodeSettings
from core.titre import DilutionSettings
from models.wells.reading import calls_from_probs, read_calls, rows_of

CLASSES = ["flowing", "agglutinated", "invalid", "nowell"]


def plate_probs() -> np.ndarray:
    """Every row endpoint 6, confidently; A3 split between flowing and agglutinated (below the
    0.5 threshold), B12 a crop with no well in it."""
    probs = np.zeros((96, 4), np.float32)
    for i in range(96):
        probs[i] = [0.997, 0.001, 0.001, 0.001] if i % 12 < 6 else [0.001, 0.997, 0.001, 0.001]
    probs[2] = [0.48, 0.47, 0.04, 0.01]
    probs[23] = [0.05, 0.05, 0.0, 0.9]
    return probs


def test_per_well_is_todays_reading_and_the_decode_settles_the_row() -> None:
    probs = plate_probs()
    per_well, decodes = read_calls(probs, CLASSES, 0.5)
    assert per_well == calls_from_probs(probs, CLASSES, 0.5) and decodes == []
    off, _ = read_calls(probs, CLASSES, 0.5, decode=RowDecodeSettings(enabled=False))
    assert off == per_well
    assert per_well["A3"].state == "unread" and per_well["B12"].flags == ("no_well",)
    decoded, decodes = read_calls(probs, CLASSES, 0.5, decode=RowDecodeSettings(enabled=True))
    assert len(decodes) == 8 and decodes[0].decided
    rows_pw, rows_dec = rows_of(per_well), rows_of(decoded)
    assert not rows_pw[0].counted and rows_dec[0].counted and rows_dec[0].endpoint == 6
    assert decoded["A3"].state == "flowing"
    assert not rows_dec[1].counted  # B12 holds no well: never settled
    assert all(r.counted for r in rows_dec[2:]) and all(r.counted for r in rows_pw[2:])


def test_the_decode_reads_only_the_test_columns() -> None:
    probs = plate_probs()
    dilution = DilutionSettings(control_columns=(12,))  # B12 is a control column now
    decoded, decodes = read_calls(
        probs, CLASSES, 0.5, decode=RowDecodeSettings(enabled=True), dilution=dilution
    )
    assert decodes[1].test_columns == tuple(range(1, 12)) and decodes[1].decided
    assert decoded["B12"].state == "unread"  # left as it was
    assert rows_of(decoded, dilution)[1].counted
