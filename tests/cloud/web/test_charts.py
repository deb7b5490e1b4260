"""Chart geometry: bars and points are where the numbers say."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.web import charts


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (3, 5), (6, 10), (11, 20), (20, 20), (21, 50), (501, 1000)]
)
def test_nice_max(value: float, top: float) -> None:
    assert charts.nice_max(value) == top


@given(st.dictionaries(st.sampled_from([str(i) for i in range(13)]), st.integers(0, 500)))
def test_histogram_heights_are_proportional(distribution: dict[str, int]) -> None:
    h = charts.histogram(distribution)
    assert [b.key for b in h.bars] == sorted(distribution, key=int)
    plot_height = h.plot_bottom - charts.MARGIN_TOP
    top = charts.nice_max(max(distribution.values(), default=0))
    for bar in h.bars:
        assert bar.count == distribution[bar.key]
        assert bar.height == pytest.approx(plot_height * bar.count / top, abs=0.01)
        assert bar.y + bar.height == pytest.approx(h.plot_bottom, abs=0.01)
        assert h.plot_left <= bar.x and bar.x + bar.width <= h.plot_right + 0.01
    assert h.total == sum(distribution.values())


def test_histogram_ticks_are_whole_counts() -> None:
    h = charts.histogram({"4": 1, "5": 5, "6": 6, "7": 2, "8": 1})
    assert [t.label for t in h.y_ticks] == ["0", "2", "4", "6", "8", "10"]
    assert charts.histogram({"1": 2}).y_ticks[-1].label == "2"


def test_histogram_ignores_non_column_keys() -> None:
    h = charts.histogram({"total": 15, "1": 3, "0": 1})
    assert [b.key for b in h.bars] == ["0", "1"]


def test_line_chart_points_and_gaps() -> None:
    c = charts.line_chart(
        ["2026-W01", "2026-W02", "2026-W03"],
        {"North": {"2026-W01": 40.0, "2026-W03": 80.0}, "South": {"2026-W02": 20.0}},
    )
    north = next(s for s in c.series if s.name == "North")
    assert [p.label for p in north.points] == ["2026-W01", "2026-W03"]
    assert north.points[0].x == c.plot_left and north.points[1].x == c.plot_right
    top = charts.nice_max(80.0)
    span = c.plot_bottom - c.plot_top
    assert north.points[1].y == pytest.approx(c.plot_bottom - span * 80.0 / top, abs=0.01)
    assert north.path == " ".join(f"{p.x},{p.y}" for p in north.points)


def test_share_chart_uses_a_fixed_scale() -> None:
    c = charts.line_chart(["a"], {"s": {"a": 0.5}}, y_max=1.0)
    point = c.series[0].points[0]
    assert point.y == pytest.approx((c.plot_top + c.plot_bottom) / 2, abs=0.01)
    assert c.y_ticks[-1].value == 1.0
