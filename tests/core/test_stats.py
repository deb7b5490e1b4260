from __future__ import annotations

import math
import statistics as pystats

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.stats import add_distributions, compute_statistics, distribution
from core.titre import RowResult
from tests.core.helpers import endpoint_pattern, rows_for


def counted(titre: float, endpoint: int = 1) -> RowResult:
    return RowResult(
        row=0, label="A", endpoint=endpoint, titre=int(titre), counted=True, counted_titre=titre
    )


def test_known_values() -> None:
    rows = rows_for([endpoint_pattern(e) for e in (1, 2, 3, 4, 2, 3, 3, 5)])
    st_ = compute_statistics(rows, protective_titre=40)
    # titres 10, 20, 40, 80, 20, 40, 40, 160
    assert st_.n == 8
    assert math.isclose(st_.mean_log2, math.log2(10) + 15 / 8)
    assert math.isclose(st_.gmt, 10 * 2 ** (15 / 8))
    assert math.isclose(st_.sd_log2, pystats.stdev([0, 1, 2, 3, 1, 2, 2, 4]))
    titres = [10, 20, 40, 80, 20, 40, 40, 160]
    assert math.isclose(st_.cv_pct, pystats.stdev(titres) / pystats.mean(titres) * 100)
    assert st_.share_protective == 5 / 8 and st_.protective_titre == 40
    assert st_.excluded == {} and st_.excluded_total == 0


def test_n_zero_and_one_give_none_not_nan() -> None:
    empty = compute_statistics([])
    assert (empty.n, empty.gmt, empty.mean_log2, empty.sd_log2, empty.cv_pct) == (
        0,
        None,
        None,
        None,
        None,
    )
    one = compute_statistics([counted(40.0)], protective_titre=40)
    assert one.n == 1 and math.isclose(one.gmt, 40.0) and one.mean_log2 == math.log2(40)
    assert one.sd_log2 is None and one.cv_pct is None and one.share_protective == 1.0


def test_exclusions_are_counted_by_reason() -> None:
    rows = rows_for(["FFUAAAAAAAAA", "UUUUUUUUUUUU", "FFFAAAAAAAAA", "AAAAAAAAAAAA"])
    st_ = compute_statistics(rows)
    # rows E..H default to all-agglutinated (no_inhibition, counted at 5)
    assert st_.excluded == {"unread": 2} and st_.excluded_total == 2
    assert st_.n == 6
    all_out = compute_statistics(rows_for(["U" * 12] * 8))
    assert all_out.n == 0 and all_out.gmt is None and all_out.excluded_total == 8


def test_protective_titre_must_be_positive() -> None:
    with pytest.raises(ValueError, match="protective_titre"):
        compute_statistics([], protective_titre=0)


def test_distribution_counts_counted_rows_by_endpoint() -> None:
    rows = rows_for([endpoint_pattern(e) for e in (5, 6, 5, 7, 4, 6, 5, None)])
    dist = distribution(rows, 12)
    assert list(dist) == [str(c) for c in range(13)]
    assert dist["0"] == 1 and dist["5"] == 3 and dist["6"] == 2 and sum(dist.values()) == 8
    unread = rows_for(["FFUAAAAAAAAA"] + [endpoint_pattern(2)] * 7)
    assert sum(distribution(unread, 12).values()) == 7


def test_add_distributions() -> None:
    a = distribution(rows_for([endpoint_pattern(3)] * 8), 12)
    b = distribution(rows_for([endpoint_pattern(4)] * 8), 12)
    total = add_distributions([a, b], 12)
    assert total["3"] == 8 and total["4"] == 8 and sum(total.values()) == 16
    with pytest.raises(ValueError, match="do not match"):
        add_distributions([{"0": 1}], 12)


row_patterns = st.lists(st.text(alphabet="FAIU", min_size=12, max_size=12), min_size=8, max_size=8)


@settings(max_examples=200, deadline=None)
@given(patterns=row_patterns, protective=st.sampled_from([None, 20, 40, 160]))
def test_statistics_match_a_direct_computation(patterns: list[str], protective) -> None:
    rows = rows_for(patterns)
    result = compute_statistics(rows, protective_titre=protective)
    titres = [r.counted_titre for r in rows if r.counted]
    assert result.n == len(titres)
    assert result.n + result.excluded_total == len(rows)
    dist = distribution(rows, 12)
    assert sum(dist.values()) == result.n  # the distribution sums to the counted rows
    if not titres:
        assert result.gmt is None and result.sd_log2 is None
        return
    logs = [math.log2(t) for t in titres]
    assert math.isclose(result.mean_log2, pystats.fmean(logs), abs_tol=1e-9)
    assert math.isclose(result.gmt, pystats.geometric_mean(titres), rel_tol=1e-9)
    if len(titres) > 1:
        assert math.isclose(result.sd_log2, pystats.stdev(logs), abs_tol=1e-9)
        expected_cv = pystats.stdev(titres) / pystats.fmean(titres) * 100
        assert math.isclose(result.cv_pct, expected_cv, rel_tol=1e-9, abs_tol=1e-9)
    else:
        assert result.sd_log2 is None and result.cv_pct is None
    if protective is not None:
        assert result.share_protective == sum(t >= protective for t in titres) / len(titres)
    for value in (result.gmt, result.mean_log2, result.sd_log2, result.cv_pct):
        assert value is None or math.isfinite(value)
