"""Row decoding: settle a row's well calls with the HI pattern, and count it only when sure.

A well classifier gives each well its own class probabilities. Read well by well, one
uncertain well leaves its row ``unread`` (the row rule, core/README.md), and one confident
mistake (an invalid well read as flowing) counts a wrong titre. The row decode reads the row as
a whole, under an explicit model of the assay:

* **Pattern.** A row is a two-fold dilution series: flowing up to the endpoint, agglutinated
  after it (endpoint 0..n equally likely). With probability ``reversed_rate`` the row follows
  the reversed pattern of an HA titration (agglutinated first, flowing after). Each readable
  well departs from its row's pattern with probability ``skip_rate`` (a skipped well, a lone
  flowing well past the endpoint), independently.
* **Invalid wells.** Each well is invalid (empty, bubble, debris) with probability
  ``invalid_rate``, whatever the pattern; a row with an invalid test well is ``unread``
  (DOMAIN rule 3).
* **Evidence.** The classifier's probabilities of ``flowing``, ``agglutinated``, ``invalid``
  for the well, raised to ``evidence_weight`` (below 1 tempers an over-confident network), are
  its likelihoods. A well called ``invalid`` at or above the well threshold is taken as invalid
  (its row is ``unread``, as DOMAIN says); a crop with no well in it (``no_well``) carries no
  evidence and stays ``unread``, so its row never counts.

The posterior over the row's outcomes (endpoint 0..n with or without a skip, or ``unread``) is
exact: given the pattern the wells are independent, so each outcome's mass is a product of
per-well terms (O(n²) per row, pure Python). The most probable endpoint **decides** the row only
when its posterior reaches ``min_posterior`` and it is readable (with ``skip_matters``, when
the counting policy excludes skipped rows, the skip flag must be as sure). Then the row's test
wells take the most probable states that give that outcome (a well the decode settled or
changed carries ``low_confidence``: its own crop did not decide it). A row that is not decided
keeps its per-well calls, and when those would let the row count, its least certain well is made
``unread`` + ``low_confidence``, so the row is not counted. ``core.titre`` then computes every
row from the well calls, as it does without the decode: the decode decides wells, never rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import add, mul, sub

from pydantic import BaseModel, ConfigDict, Field

from core.plate import PlateFormat
from core.wells import WellCall, WellState

# (flowing, agglutinated, invalid) probabilities of one well, from the classifier.
Evidence = tuple[float, float, float]
_READABLE = ("flowing", "agglutinated")
_FLOOR = 1e-6  # no evidence is ever taken as impossible


class RowDecodeSettings(BaseModel):
    """The assay model of the row decode and its decision threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Settle wells with the row's HI pattern (the default since hi-wells 2.4.0); "
        "off: every well is read on its own.",
    )
    min_posterior: float = Field(
        default=0.99,
        gt=0.5,
        le=1.0,
        description="A row counts only when its decided endpoint (and skip flag, where the "
        "counting policy excludes skipped rows) has at least this posterior probability.",
    )
    skip_rate: float = Field(
        default=0.02,
        gt=0.0,
        lt=0.5,
        description="Chance that a readable well departs from its row's pattern (a skip).",
    )
    reversed_rate: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="Share of rows with the reversed (HA titration) pattern.",
    )
    invalid_rate: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="Prior chance that a well is invalid."
    )
    invalid_pooling: float = Field(
        default=0.0,
        ge=0.0,
        le=10_000.0,
        description="Invalid wells come plate by plate (a dry or bubbly plate): the plate's own "
        "rate is estimated from all its wells' invalid probabilities, with invalid_rate worth "
        "this many wells; 0 keeps invalid_rate for every plate.",
    )
    evidence_weight: float = Field(
        default=3.0,
        gt=0.0,
        le=4.0,
        description="Exponent on the classifier's probabilities: below 1 trusts them less, "
        "above 1 more (a network trained with label smoothing is under-confident).",
    )


@dataclass(frozen=True)
class RowDecode:
    """The posterior of one row and what the decode decided.

    Positions are 1-based test-column positions (0: no well flows); ``test_columns`` maps them
    to plate column numbers.
    """

    row: int
    test_columns: tuple[int, ...]
    endpoints: tuple[float, ...]  # P(all test wells readable, endpoint at position k), k = 0..n
    skipped: tuple[float, ...]  # the part of ``endpoints[k]`` whose row has a skip
    unread: float  # P(some test well invalid)
    wells: tuple[Evidence, ...]  # each test well's posterior (flowing, agglutinated, invalid)
    outcome: tuple[int, bool] | None  # most probable outcome (position, skipped); None: unread
    posterior: float  # its posterior (of the endpoint alone unless the skip matters)
    decided: bool  # a readable outcome at or above ``min_posterior``, every well observed
    states: tuple[WellState, ...] | None  # the decided test-well states, when decided

    @property
    def endpoint(self) -> int | None:
        """The decided endpoint as a plate column number (0: none flows); None if undecided."""
        if not self.decided or self.outcome is None:
            return None
        pos = self.outcome[0]
        return self.test_columns[pos - 1] if pos else 0


def _templates(n: int, settings: RowDecodeSettings) -> list[tuple[float, int, bool]]:
    """(prior weight, boundary e, reversed) for every pattern the prior allows: forward rows
    expect flowing at positions < e, reversed (HA) rows at positions >= e."""
    forward = [((1.0 - settings.reversed_rate) / (n + 1), e, False) for e in range(n + 1)]
    if settings.reversed_rate <= 0.0 or n < 2:
        return forward
    return forward + [(settings.reversed_rate / (n - 1), e, True) for e in range(1, n)]


def _likelihood(ev: Evidence | None, weight: float) -> tuple[float, float, float]:
    if ev is None:
        return (1.0, 1.0, 1.0)
    f, a, v = ev
    return (max(f, _FLOOR) ** weight, max(a, _FLOOR) ** weight, max(v, _FLOOR) ** weight)


def decode_row(
    evidence: Sequence[Evidence | None],
    settings: RowDecodeSettings,
    *,
    pinned_invalid: Sequence[bool] | None = None,
    row: int = 0,
    test_columns: tuple[int, ...] | None = None,
    skip_matters: bool = False,
) -> RowDecode:
    """Posterior and decision for one row's test wells (in dilution order).

    ``evidence[i]``: the classifier's (flowing, agglutinated, invalid) probabilities, None for
    no evidence (such a row is never decided). ``pinned_invalid[i]``: the well is taken as
    invalid. The decision is on the endpoint (the skip flag is the more probable one), or on
    (endpoint, skip) with ``skip_matters`` (the counting policy excludes skipped rows).
    """
    n = len(evidence)
    if n == 0:
        raise ValueError("a row needs at least one test well")
    cols = test_columns if test_columns is not None else tuple(range(1, n + 1))
    if len(cols) != n:
        raise ValueError("test_columns must name one plate column per test well")
    pins = list(pinned_invalid) if pinned_invalid is not None else [False] * n
    q, eps = settings.invalid_rate, settings.skip_rate
    lik = [_likelihood(ev, settings.evidence_weight) for ev in evidence]
    # Each well's (flowing, agglutinated, invalid) prior x likelihood when its pattern expects
    # flowing (exp_f) or agglutinated (exp_a); a pinned well can only be invalid.
    exp_f: list[tuple[float, float, float]] = []
    exp_a: list[tuple[float, float, float]] = []
    for (lf, la, li), pin in zip(lik, pins, strict=True):
        if pin:
            exp_f.append((0.0, 0.0, q * li))
            exp_a.append((0.0, 0.0, q * li))
        else:
            r = 1.0 - q
            exp_f.append((r * (1.0 - eps) * lf, r * eps * la, q * li))
            exp_a.append((r * eps * lf, r * (1.0 - eps) * la, q * li))
    total = 0.0
    uses_f = [0.0] * (n + 1)  # difference array: prior mass of the patterns expecting flowing
    per_template: list[tuple[float, int, bool, list[float], list[float]]] = []
    # Each well's terms under each expectation, as columns: a pattern's are slices of these.
    f_of = ([t[0] for t in exp_f], [t[0] for t in exp_a])  # flowing
    r_of = ([t[0] + t[1] for t in exp_f], [t[0] + t[1] for t in exp_a])  # readable
    a_of = ([t[1] for t in exp_f], [t[1] for t in exp_a])  # agglutinated
    # A pattern's mass is the product of its wells' sums: prefix and suffix products of the
    # wells' sums under each expectation give it for every boundary at once.
    sum_f = [t[0] + t[1] + t[2] for t in exp_f]
    sum_a = [t[0] + t[1] + t[2] for t in exp_a]
    pre_sf = list(accumulate(sum_f, mul, initial=1.0))
    pre_sa = list(accumulate(sum_a, mul, initial=1.0))
    suf_sf = list(accumulate(reversed(sum_f), mul, initial=1.0))[::-1]
    suf_sa = list(accumulate(reversed(sum_a), mul, initial=1.0))[::-1]
    end0 = 0.0
    ends_k = [0.0] * n  # endpoint k + 1, skipped or not
    skips_k = [0.0] * n
    for weight, e, rev in _templates(n, settings):
        first, then = (1, 0) if rev else (0, 1)  # expectation before / from the boundary
        fs = f_of[first][:e] + f_of[then][e:]
        rs = r_of[first][:e] + r_of[then][e:]
        as_ = a_of[first][:e] + a_of[then][e:]
        z = weight * (pre_sa[e] * suf_sf[e] if rev else pre_sf[e] * suf_sa[e])
        total += z
        lo, hi = (e, n) if rev else (0, e)
        uses_f[lo] += z
        uses_f[hi] -= z
        # weight x product of fs[:k] / rs[:k]; product of the agglutinated terms from k on
        pre_f = list(accumulate(fs, mul, initial=weight))
        pre_r = list(accumulate(rs, mul, initial=weight))
        suf_a = list(accumulate(reversed(as_), mul, initial=1.0))[::-1]
        # endpoint k (1..n): well k flows, every later one is agglutinated, earlier ones are
        # all flowing (no skip) or readable with at least one agglutinated (skip); products
        # are monotonic, so pre_r >= pre_f and `skipped` is never negative
        at = list(map(mul, fs, suf_a[1:]))
        clean = list(map(mul, at, pre_f))
        either = list(map(mul, at, pre_r))
        skipped = list(map(sub, either, clean))
        per_template.append((weight * suf_a[0], e, rev, clean, skipped))
        end0 += weight * suf_a[0]
        ends_k = list(map(add, ends_k, either))
        skips_k = list(map(add, skips_k, skipped))
    ends = [end0, *ends_k]
    skips = [0.0, *skips_k]
    if total <= 0.0:
        total = 1.0
    ends = [x / total for x in ends]
    skips = [x / total for x in skips]
    unread = max(0.0, 1.0 - sum(ends))
    wells = _marginals(exp_f, exp_a, list(accumulate(uses_f[:n])), total)
    if skip_matters:  # the skip flag changes whether the row counts: it must be sure too
        outcomes = {(k, False): ends[k] - skips[k] for k in range(n + 1)}
        outcomes.update({(k, True): skips[k] for k in range(1, n + 1)})
    else:  # only the endpoint changes what counts; the flag is the more probable one
        outcomes = {(k, skips[k] > ends[k] - skips[k]): ends[k] for k in range(n + 1)}
    outcome, posterior = max(outcomes.items(), key=lambda kv: kv[1])
    chosen: tuple[int, bool] | None = outcome
    if unread > posterior:
        chosen, posterior = None, unread
    observed = all(ev is not None for ev in evidence)
    decided = chosen is not None and observed and posterior >= settings.min_posterior
    states = None
    if decided and chosen is not None:
        k, skip = chosen
        # the pattern that gives the decided outcome the most mass sets the other wells
        best = max(
            per_template,
            key=lambda t: t[0] if k == 0 else (t[4] if skip else t[3])[k - 1],
        )
        expect = [(i >= best[1]) if best[2] else (i < best[1]) for i in range(n)]
        states = _states_for(chosen, expect, lik, eps)
    return RowDecode(
        row=row,
        test_columns=cols,
        endpoints=tuple(ends),
        skipped=tuple(skips),
        unread=unread,
        wells=wells,
        outcome=chosen,
        posterior=posterior,
        decided=decided,
        states=states,
    )


def _marginals(
    exp_f: list[tuple[float, float, float]],
    exp_a: list[tuple[float, float, float]],
    uses_f: list[float],
    total: float,
) -> tuple[Evidence, ...]:
    """Each well's posterior: given its pattern a well is independent of the others, so it
    mixes its two normalised terms by the posterior mass of the patterns expecting each."""
    out: list[Evidence] = []
    for tf, ta, wf in zip(exp_f, exp_a, uses_f, strict=True):
        sf, sa = sum(tf), sum(ta)
        wa = total - wf
        cf = wf / (sf * total) if sf > 0 else 0.0
        ca = wa / (sa * total) if sa > 0 else 0.0
        out.append((cf * tf[0] + ca * ta[0], cf * tf[1] + ca * ta[1], cf * tf[2] + ca * ta[2]))
    return tuple(out)


def _states_for(
    outcome: tuple[int, bool],
    expect: list[bool],
    lik: list[tuple[float, float, float]],
    eps: float,
) -> tuple[WellState, ...]:
    """The most probable readable states giving ``outcome`` under the pattern ``expect``."""
    k, skip = outcome
    n = len(lik)
    states: list[WellState] = ["agglutinated"] * n
    if k:
        states[k - 1] = "flowing"
        ratios = []
        for i in range(k - 1):
            pf = (1.0 - eps) if expect[i] else eps
            f, a = pf * lik[i][0], (1.0 - pf) * lik[i][1]
            ratios.append(a / f if f > 0 else math.inf)
            states[i] = "agglutinated" if skip and a > f else "flowing"
        if skip and "agglutinated" not in states[: k - 1]:
            states[max(range(k - 1), key=lambda i: ratios[i])] = "agglutinated"
    return tuple(states)


def evidence_from_probs(probs: Mapping[str, float]) -> Evidence:
    """(flowing, agglutinated, invalid) from a class -> probability mapping, renormalised over
    those three (a ``nowell`` share is dropped)."""
    f = float(probs.get("flowing", 0.0))
    a = float(probs.get("agglutinated", 0.0))
    v = float(probs.get("invalid", 0.0))
    s = f + a + v
    if not s > 0.0:
        return (1 / 3, 1 / 3, 1 / 3)
    return (f / s, a / s, v / s)


def decode_plate(
    calls: Mapping[str, WellCall],
    evidence: Mapping[str, Evidence],
    fmt: PlateFormat,
    test_columns: Sequence[int],
    settings: RowDecodeSettings,
    *,
    skip_matters: bool = False,
) -> tuple[dict[str, WellCall], list[RowDecode]]:
    """The well calls after the row decode, and each row's posterior.

    ``calls``: the per-well calls (threshold applied: ``unread`` + ``low_confidence`` below it,
    ``unread`` + ``no_well`` for a crop without a well); ``evidence``: each well's classifier
    probabilities (wells missing from it carry none). Control columns are left as they are.
    """
    out = dict(calls)
    decodes: list[RowDecode] = []
    cols = tuple(test_columns)
    if settings.invalid_pooling > 0.0 and evidence:
        # the posterior mean of the plate's invalid rate under a Beta prior (mean invalid_rate,
        # invalid_pooling wells' worth), given each well's probability of being invalid
        expected = sum(ev[2] for ev in evidence.values())
        rate = (settings.invalid_pooling * settings.invalid_rate + expected) / (
            settings.invalid_pooling + len(evidence)
        )
        settings = settings.model_copy(update={"invalid_rate": min(max(rate, 1e-4), 0.5)})
    for row in range(fmt.rows):
        ids = [fmt.well_id(row, c - 1) for c in cols]
        evs: list[Evidence | None] = []
        pins: list[bool] = []
        for wid in ids:
            call = calls.get(wid)
            no_well = call is None or "no_well" in call.flags
            evs.append(None if no_well else evidence.get(wid))
            pins.append(call is not None and call.state == "invalid")
        dec = decode_row(
            evs,
            settings,
            pinned_invalid=pins,
            row=row,
            test_columns=cols,
            skip_matters=skip_matters,
        )
        decodes.append(dec)
        if dec.decided and dec.states is not None:
            for wid, state in zip(ids, dec.states, strict=True):
                call = calls[wid]
                if call.state == state:
                    continue
                flags = (
                    call.flags
                    if "low_confidence" in call.flags
                    else (*call.flags, "low_confidence")
                )
                out[wid] = call.model_copy(update={"state": state, "flags": flags})
            continue
        row_calls = [calls.get(wid) for wid in ids]
        if all(c is not None and c.state in _READABLE for c in row_calls):
            # Undecided, yet every per-well call is readable: core.titre would count the row.
            # The call the row's posterior backs least loses it (most often the likely invalid
            # well, or the uncertain one that moves the endpoint).
            weakest = min(
                range(len(ids)), key=lambda i: _support(dec.wells[i], calls[ids[i]].state)
            )
            wid = ids[weakest]
            call = calls[wid]
            out[wid] = call.model_copy(
                update={"state": "unread", "flags": (*call.flags, "low_confidence")}
            )
    return out, decodes


def _support(posterior: Evidence, state: WellState) -> float:
    """The posterior probability of a well's call."""
    return {"flowing": posterior[0], "agglutinated": posterior[1], "invalid": posterior[2]}.get(
        state, 0.0
    )
