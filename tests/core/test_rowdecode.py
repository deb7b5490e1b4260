"""core.rowdecode: the posterior is the assay model's (checked against brute force), and a row
counts only when its outcome is sure; core.titre still computes every row."""

from __future__ import annotations

import itertools
import math

import pytest
from pydantic import ValidationError

from core.plate import PLATE_96
from core.rowdecode import (
    Evidence,
    RowDecodeSettings,
    decode_plate,
    decode_row,
    evidence_from_probs,
)
from core.titre import DilutionSettings, row_results
from core.wells import WellCall, WellState

F: Evidence = (0.998, 0.001, 0.001)
A: Evidence = (0.001, 0.998, 0.001)
V: Evidence = (0.01, 0.01, 0.98)  # invalid
# Fixed here (not the defaults, which are tuned): the tests check the rule, not the tuning.
SETTINGS = RowDecodeSettings(
    min_posterior=0.99, skip_rate=0.02, invalid_rate=0.05, evidence_weight=1.0, reversed_rate=0.1
)
STATE = {"F": "flowing", "A": "agglutinated", "I": "invalid"}


def brute_force(
    evidence: list[Evidence], s: RowDecodeSettings
) -> tuple[dict[tuple[int, bool], float], float, list[list[float]]]:
    """Every (flowing | agglutinated | invalid)^n row under the same prior, outcome by the
    DOMAIN rule 3 reading of the states."""
    n = len(evidence)
    templates = [((1 - s.reversed_rate) / (n + 1), [i < e for i in range(n)]) for e in range(n + 1)]
    templates += [(s.reversed_rate / (n - 1), [i >= e for i in range(n)]) for e in range(1, n)]
    outcomes: dict[tuple[int, bool], float] = {}
    unread = total = 0.0
    wells = [[0.0, 0.0, 0.0] for _ in evidence]
    for seq in itertools.product("FAI", repeat=n):
        prior = 0.0
        for weight, expect in templates:
            p = weight
            for i, x in enumerate(seq):
                pf = 1 - s.skip_rate if expect[i] else s.skip_rate
                p *= {"F": (1 - s.invalid_rate) * pf, "A": (1 - s.invalid_rate) * (1 - pf)}.get(
                    x, s.invalid_rate
                )
            prior += p
        lik = math.prod(
            ev["FAI".index(x)] ** s.evidence_weight for ev, x in zip(evidence, seq, strict=True)
        )
        mass = prior * lik
        total += mass
        for i, x in enumerate(seq):
            wells[i]["FAI".index(x)] += mass
        if "I" in seq:
            unread += mass
            continue
        flowing = [i + 1 for i, x in enumerate(seq) if x == "F"]
        k = flowing[-1] if flowing else 0
        key = (k, "A" in seq[: max(k - 1, 0)])
        outcomes[key] = outcomes.get(key, 0.0) + mass
    marginals = [[m / total for m in w] for w in wells]
    return {k: v / total for k, v in outcomes.items()}, unread / total, marginals


@pytest.mark.parametrize(
    "evidence",
    [
        [F, (0.5, 0.4, 0.1), A, A, (0.3, 0.3, 0.4)],
        [(0.6, 0.3, 0.1), F, (0.2, 0.7, 0.1), F, A],
        [A, A, F, F, (0.4, 0.55, 0.05)],
    ],
)
def test_posterior_is_the_models_exactly(evidence: list[Evidence]) -> None:
    s = RowDecodeSettings(skip_rate=0.05, invalid_rate=0.08, reversed_rate=0.2, evidence_weight=1.5)
    dec = decode_row(evidence, s)
    want, unread, marginals = brute_force(evidence, s)
    assert dec.unread == pytest.approx(unread, rel=1e-9, abs=1e-12)
    for k in range(len(evidence) + 1):
        assert dec.endpoints[k] == pytest.approx(
            want.get((k, False), 0.0) + want.get((k, True), 0.0), rel=1e-9, abs=1e-12
        )
        assert dec.skipped[k] == pytest.approx(want.get((k, True), 0.0), rel=1e-9, abs=1e-12)
    assert sum(dec.endpoints) + dec.unread == pytest.approx(1.0)
    for got, wanted in zip(dec.wells, marginals, strict=True):
        assert got == pytest.approx(tuple(wanted), rel=1e-9, abs=1e-12)


def calls_of(
    rows: list[str], low: dict[str, Evidence] | None = None
) -> tuple[dict[str, WellCall], dict[str, Evidence]]:
    """Per-well calls as the classifier makes them at threshold 0.5 from evidence letters:
    F/A/I confident, '?' = the evidence in ``low`` (below the threshold: unread)."""
    calls: dict[str, WellCall] = {}
    evidence: dict[str, Evidence] = {}
    for r, row in enumerate(rows):
        for c, letter in enumerate(row):
            wid = PLATE_96.well_id(r, c)
            if letter == "?":
                ev = (low or {})[wid]
            elif letter == "N":
                ev = (1 / 3, 1 / 3, 1 / 3)
            else:
                ev = {"F": F, "A": A, "I": V}[letter]
            evidence[wid] = ev
            best = max(range(3), key=lambda k: ev[k])
            state: WellState = ("flowing", "agglutinated", "invalid")[best]
            flags: tuple[str, ...] = ()
            if letter == "N":
                state, flags = "unread", ("no_well",)
            elif ev[best] < 0.5:
                state, flags = "unread", ("low_confidence",)
            calls[wid] = WellCall(
                well_id=wid,
                row=r,
                col=c,
                state=state,
                confidence=ev[best],
                flags=flags,  # type: ignore[arg-type]
            )
    return calls, evidence


def plate(*rows: str) -> list[str]:
    return list(rows) + ["FFFFFAAAAAAA"] * (8 - len(rows))


def test_an_uncertain_well_inside_the_pattern_is_settled_and_the_row_counts() -> None:
    calls, ev = calls_of(plate("FF?FFFAAAAAA"), {"A3": (0.48, 0.47, 0.05)})
    before = row_results(calls, PLATE_96)[0]
    assert not before.counted and "unread" in before.flags  # per well: one unread well
    decoded, decodes = decode_plate(calls, ev, PLATE_96, range(1, 13), SETTINGS)
    assert decodes[0].decided and decodes[0].endpoint == 6
    assert decoded["A3"].state == "flowing" and "low_confidence" in decoded["A3"].flags
    row = row_results(decoded, PLATE_96)[0]
    assert row.counted and row.endpoint == 6 and row.titre == 320
    # the other rows were already sure: unchanged
    assert all(decoded[w] == calls[w] for w in calls if not w.startswith("A"))


def test_an_uncertain_well_at_the_endpoint_is_not_guessed() -> None:
    calls, ev = calls_of(plate("FFFFF?AAAAAA"), {"A6": (0.45, 0.45, 0.1)})
    decoded, decodes = decode_plate(calls, ev, PLATE_96, range(1, 13), SETTINGS)
    assert not decodes[0].decided and decodes[0].posterior < SETTINGS.min_posterior
    assert decoded["A6"].state == "unread"
    assert not row_results(decoded, PLATE_96)[0].counted


def test_a_confident_invalid_well_keeps_its_row_unread() -> None:
    calls, ev = calls_of(plate("FFFIFFAAAAAA", "FFFFFFAAAAAI"))
    decoded, decodes = decode_plate(calls, ev, PLATE_96, range(1, 13), SETTINGS)
    for r, wid in ((0, "A4"), (1, "B12")):
        assert decodes[r].outcome is None and decodes[r].unread == pytest.approx(1.0)
        assert decoded[wid].state == "invalid"
        row = row_results(decoded, PLATE_96)[r]
        assert not row.counted and row.exclusion_reason == "unread"


def test_a_crop_without_a_well_is_never_settled() -> None:
    calls, ev = calls_of(plate("FFNFFFAAAAAA"))
    decoded, decodes = decode_plate(calls, ev, PLATE_96, range(1, 13), SETTINGS)
    assert not decodes[0].decided
    assert decoded["A3"].state == "unread" and decoded["A3"].flags == ("no_well",)
    assert not row_results(decoded, PLATE_96)[0].counted


def test_a_readable_row_that_is_not_sure_is_not_counted() -> None:
    # Every well called (above 0.5), but A7 could well be invalid: per well this row counts.
    shaky: Evidence = (0.52, 0.02, 0.46)
    calls, ev = calls_of(plate("FFFFFF?AAAAA"), {"A7": shaky})
    assert calls["A7"].state == "flowing"
    assert row_results(calls, PLATE_96)[0].counted
    decoded, decodes = decode_plate(calls, ev, PLATE_96, range(1, 13), SETTINGS)
    assert not decodes[0].decided
    assert decoded["A7"].state == "unread" and "low_confidence" in decoded["A7"].flags
    assert not row_results(decoded, PLATE_96)[0].counted


def test_a_clear_skip_is_kept_and_flagged() -> None:
    calls, ev = calls_of(plate("FFAFFFFAAAAA"))
    decoded, decodes = decode_plate(calls, ev, PLATE_96, range(1, 13), SETTINGS)
    assert decodes[0].decided and decodes[0].outcome == (7, True)
    row = row_results(decoded, PLATE_96)[0]
    assert row.counted and row.endpoint == 7 and "skipped" in row.flags


def test_control_columns_are_left_alone() -> None:
    # Columns 11-12 are controls (unread there must not matter); the decode reads 1-10 only.
    calls, ev = calls_of(plate("FF?FFAAAAANN"), {"A3": (0.48, 0.47, 0.05)})
    dil = DilutionSettings(control_columns=(11, 12))
    decoded, decodes = decode_plate(calls, ev, PLATE_96, dil.test_columns(PLATE_96), SETTINGS)
    assert decodes[0].decided and decodes[0].endpoint == 5
    assert decoded["A11"] == calls["A11"] and decoded["A12"] == calls["A12"]
    row = row_results(decoded, PLATE_96, dilution=dil)[0]
    assert row.counted and row.endpoint == 5


def test_the_threshold_decides() -> None:
    ev = [F, F, (0.48, 0.47, 0.05), F, F, F, A, A, A, A, A, A]
    dec = decode_row(ev, SETTINGS)
    assert dec.decided
    strict = decode_row(
        ev, SETTINGS.model_copy(update={"min_posterior": min(1.0, dec.posterior + 1e-9)})
    )
    assert not strict.decided and strict.outcome == dec.outcome


def test_settings_and_evidence_are_checked() -> None:
    with pytest.raises(ValidationError):
        RowDecodeSettings(min_posterior=0.4)
    with pytest.raises(ValidationError):
        RowDecodeSettings(skip_rate=0.0)
    with pytest.raises(ValueError, match="at least one"):
        decode_row([], SETTINGS)
    assert evidence_from_probs({"flowing": 0.2, "agglutinated": 0.2, "nowell": 0.6}) == (
        0.5,
        0.5,
        0.0,
    )
    assert evidence_from_probs({"nowell": 1.0}) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_the_skip_flag_must_be_sure_only_when_skipped_rows_are_excluded() -> None:
    # Column 3 could be a skip or not (its own evidence is split); the endpoint (6) is sure.
    ev = [F, F, (0.3, 0.68, 0.02), F, F, F, A, A, A, A, A, A]
    counted = decode_row(ev, SETTINGS)
    assert counted.decided and counted.endpoint == 6
    assert 0.01 < counted.skipped[6] / counted.endpoints[6] < 0.99  # the flag itself is unsure
    strict = decode_row(ev, SETTINGS, skip_matters=True)
    assert not strict.decided and strict.posterior < counted.posterior
