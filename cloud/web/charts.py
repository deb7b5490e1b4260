"""Hand-written SVG charts: pure geometry here, drawn by the `charts.html` macros.

A histogram and a line chart are a few rectangles and a polyline; server-side geometry keeps
the numbers testable and the page readable without script. The line charts are also drawn,
interactively, by the vendored uPlot from `chart_data.py`'s JSON (static/charts.js); this SVG
is then the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 260
MARGIN_LEFT = 48
MARGIN_RIGHT = 40
MARGIN_TOP = 16
MARGIN_BOTTOM = 40


@dataclass(frozen=True)
class Tick:
    value: float
    label: str
    pos: float


@dataclass(frozen=True)
class Bar:
    key: str
    label: str
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Histogram:
    bars: list[Bar]
    y_ticks: list[Tick]
    width: int
    height: int
    plot_left: float
    plot_bottom: float
    plot_right: float
    total: int


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (at least 1): readable axis ends."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def integer_tick_count(top: float) -> int:
    """Intervals for an axis of whole counts ending at a `nice_max` value: labels stay whole."""
    if top <= 5:
        return max(int(top), 1)
    lead = round(top / 10 ** math.floor(math.log10(top)))
    return 4 if lead == 2 else 5


def _ticks(top: float, *, to_pos: float, bottom_pos: float, count: int = 4) -> list[Tick]:
    ticks = []
    for i in range(count + 1):
        value = top * i / count
        pos = bottom_pos - (bottom_pos - to_pos) * i / count
        label = f"{value:g}" if value == int(value) else f"{value:.1f}"
        ticks.append(Tick(value=value, label=label, pos=round(pos, 2)))
    return ticks


def histogram(
    distribution: dict[str, int],
    *,
    labels: dict[str, str] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Histogram:
    """Bars for the keys of a distribution in numeric order ("0".."12"), counts to scale."""
    keys = sorted((k for k in distribution if k.isdigit()), key=int)
    counts = [int(distribution[k]) for k in keys]
    top = nice_max(max(counts, default=0))
    plot_left, plot_right = float(MARGIN_LEFT), float(width - MARGIN_RIGHT)
    plot_top, plot_bottom = float(MARGIN_TOP), float(height - MARGIN_BOTTOM)
    slot = (plot_right - plot_left) / max(len(keys), 1)
    bars = []
    for i, (key, count) in enumerate(zip(keys, counts, strict=True)):
        bar_height = (plot_bottom - plot_top) * count / top
        bars.append(
            Bar(
                key=key,
                label=(labels or {}).get(key, key),
                count=count,
                x=round(plot_left + i * slot + slot * 0.1, 2),
                y=round(plot_bottom - bar_height, 2),
                width=round(slot * 0.8, 2),
                height=round(bar_height, 2),
            )
        )
    return Histogram(
        bars=bars,
        y_ticks=_ticks(top, to_pos=plot_top, bottom_pos=plot_bottom, count=integer_tick_count(top)),
        width=width,
        height=height,
        plot_left=plot_left,
        plot_bottom=plot_bottom,
        plot_right=plot_right,
        total=sum(counts),
    )


@dataclass(frozen=True)
class Point:
    label: str
    value: float
    x: float
    y: float


@dataclass(frozen=True)
class Series:
    name: str
    css: str
    points: list[Point]

    @property
    def path(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass(frozen=True)
class LineChart:
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: int
    height: int
    plot_left: float
    plot_bottom: float
    plot_right: float
    plot_top: float


def line_chart(
    periods: Sequence[str],
    series: dict[str, dict[str, float]],
    *,
    y_max: float | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> LineChart:
    """One line per series over shared x periods (sorted labels); a missing value is a gap.

    `series` maps a name to {period: value}. `y_max` fixes the scale (1.0 for shares).
    """
    plot_left, plot_right = float(MARGIN_LEFT), float(width - MARGIN_RIGHT)
    plot_top, plot_bottom = float(MARGIN_TOP), float(height - MARGIN_BOTTOM)
    values = [v for s in series.values() for v in s.values()]
    top = y_max if y_max is not None else nice_max(max(values, default=0.0))
    n = len(periods)
    step = (plot_right - plot_left) / max(n - 1, 1)

    def x_of(i: int) -> float:
        return round(plot_left + (i * step if n > 1 else (plot_right - plot_left) / 2), 2)

    out = []
    for idx, (name, data) in enumerate(sorted(series.items())):
        points = [
            Point(
                label=period,
                value=data[period],
                x=x_of(i),
                y=round(plot_bottom - (plot_bottom - plot_top) * data[period] / top, 2),
            )
            for i, period in enumerate(periods)
            if period in data
        ]
        out.append(Series(name=name, css=f"series-{idx % 6}", points=points))
    every = max(1, math.ceil(n / 8))
    x_ticks = [Tick(value=i, label=p, pos=x_of(i)) for i, p in enumerate(periods) if i % every == 0]
    return LineChart(
        series=out,
        x_ticks=x_ticks,
        y_ticks=_ticks(top, to_pos=plot_top, bottom_pos=plot_bottom),
        width=width,
        height=height,
        plot_left=plot_left,
        plot_bottom=plot_bottom,
        plot_right=plot_right,
        plot_top=plot_top,
    )
