"""Server-side SVG line charts with axes, ticks, grid lines, a legend and point markers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from server.coordinator.dashboard.charts import (
    MARGIN_RIGHT,
    Formatter,
    empty,
    integer_ticks,
    nice_step,
    ticks,
)
from server.coordinator.dashboard.markup import Markup, fmt, join

_WIDTH = 640
_HEIGHT = 260
_MARGIN_LEFT, _MARGIN_TOP, _MARGIN_BOTTOM = 70, 30, 46
_MAX_MARKERS = 120


@dataclass(frozen=True)
class Series:
    """One line of a line chart.

    Parameters
    ----------
    name : str
        Stable identifier, rendered as ``data-series`` (e.g. ``"uplink"``).
    label : str
        Legend text.
    points : Sequence[tuple[float, float]]
        ``(x, y)`` pairs in x order.
    color : str
        Stroke colour (a CSS colour literal written in this package).
    """

    name: str
    label: str
    points: Sequence[tuple[float, float]]
    color: str


def _y_domain(series: Sequence[Series]) -> tuple[float, float]:
    values = [y for s in series for _, y in s.points]
    low, high = min(0.0, min(values)), max(values)
    if high <= low:
        high = low + 1.0
    step = nice_step(high - low, 5)
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _x_domain(series: Sequence[Series]) -> tuple[float, float]:
    xs = [x for s in series for x, _ in s.points]
    low, high = min(xs), max(xs)
    if high <= low:
        low, high = low - 1, high + 1
    return low, high


def _legend(series: Sequence[Series]) -> Markup:
    items = []
    x = _MARGIN_LEFT
    for s in series:
        items.append(
            fmt(
                '<g class="legend-item" data-series="{name}">'
                '<line x1="{x0}" y1="12" x2="{x1}" y2="12" stroke="{color}" stroke-width="3"/>'
                '<text x="{tx}" y="16" class="legend-label">{label}</text></g>',
                name=s.name,
                x0=x,
                x1=x + 18,
                color=s.color,
                tx=x + 24,
                label=s.label,
            )
        )
        x += 24 + 8 * len(s.label) + 20
    return join(items)


def line_chart(
    *,
    chart_id: str,
    title: str,
    series: Sequence[Series],
    y_label: str,
    y_format: Formatter,
    x_label: str = "Round",
    y_domain: tuple[float, float] | None = None,
    empty_message: str = "No data yet.",
) -> Markup:
    """An SVG line chart with x / y axes, ticks, grid lines, a legend and point markers.

    Parameters
    ----------
    chart_id : str
        ``id`` of the ``<svg>``; an empty chart renders ``<p id="{chart_id}-empty">``.
    title : str
        Accessible title (``<title>`` of the SVG).
    series : Sequence[Series]
        Lines to draw, one ``<polyline class="series" data-series=...>`` each.
    y_label : str
        Label of the y axis.
    y_format : Callable[[float], str]
        Formats y tick labels and marker tooltips.
    x_label : str (default: "Round")
        Label of the x axis; x ticks are integers.
    y_domain : tuple[float, float] | None (default: None -> from 0 to a round maximum)
        Fixed y range, e.g. ``(0, 1)`` for accuracy.
    empty_message : str (default: "No data yet.")
        Shown instead of the chart when no series has a point.

    Returns
    -------
    Markup
        ``<svg id=chart_id data-points=N data-series=S>`` where N is the largest number of
        points of a series.
    """
    drawn = [s for s in series if s.points]
    if not drawn:
        return empty(chart_id, empty_message)
    plot = _LinePlot(*_x_domain(drawn), *(y_domain or _y_domain(drawn)))
    parts = [
        fmt('<title id="{id}-title">{title}</title>', id=chart_id, title=title),
        _y_grid(plot, y_format),
        _x_ticks(plot),
        _axes(plot, x_label, y_label),
    ]
    parts += [_polyline(plot, s, y_format) for s in drawn]
    parts.append(_legend(drawn))
    return fmt(
        '<svg id="{id}" class="chart line-chart" xmlns="http://www.w3.org/2000/svg" '
        'viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-labelledby="{id}-title" data-points="{points}" data-series="{n}">{body}</svg>',
        id=chart_id,
        w=_WIDTH,
        h=_HEIGHT,
        points=max(len(s.points) for s in drawn),
        n=len(drawn),
        body=join(parts),
    )


@dataclass(frozen=True)
class _LinePlot:
    """The data ranges of a line chart: maps data to SVG coordinates of its plot area."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float
    width = _WIDTH - _MARGIN_LEFT - MARGIN_RIGHT
    height = _HEIGHT - _MARGIN_TOP - _MARGIN_BOTTOM
    bottom = _HEIGHT - _MARGIN_BOTTOM

    def sx(self, x: float) -> float:
        return round(_MARGIN_LEFT + (x - self.x_low) / (self.x_high - self.x_low) * self.width, 2)

    def sy(self, y: float) -> float:
        clamped = min(max(y, self.y_low), self.y_high)
        return round(
            self.bottom - (clamped - self.y_low) / (self.y_high - self.y_low) * self.height, 2
        )


def _y_grid(plot: _LinePlot, y_format: Formatter) -> Markup:
    """Horizontal grid lines with their y tick labels."""
    step = nice_step(plot.y_high - plot.y_low, 5)
    return join(
        fmt(
            '<line class="grid" x1="{x0}" y1="{y}" x2="{x1}" y2="{y}"/>'
            '<text class="tick tick-y" x="{tx}" y="{ty}" text-anchor="end">{label}</text>',
            x0=_MARGIN_LEFT,
            x1=_MARGIN_LEFT + plot.width,
            y=plot.sy(tick),
            tx=_MARGIN_LEFT - 6,
            ty=plot.sy(tick) + 4,
            label=y_format(tick),
        )
        for tick in ticks(plot.y_low, plot.y_high, step)
    )


def _x_ticks(plot: _LinePlot) -> Markup:
    """Integer x tick marks with their labels."""
    return join(
        fmt(
            '<line class="tick-mark" x1="{x}" y1="{y0}" x2="{x}" y2="{y1}"/>'
            '<text class="tick tick-x" x="{x}" y="{ty}" text-anchor="middle">{label}</text>',
            x=plot.sx(tick),
            y0=plot.bottom,
            y1=plot.bottom + 5,
            ty=plot.bottom + 18,
            label=int(tick),
        )
        for tick in integer_ticks(plot.x_low, plot.x_high, 8)
    )


def _axes(plot: _LinePlot, x_label: str, y_label: str) -> Markup:
    """Both axis lines and their labels."""
    return fmt(
        '<line class="axis axis-x" x1="{x0}" y1="{y}" x2="{x1}" y2="{y}"/>'
        '<line class="axis axis-y" x1="{x0}" y1="{top}" x2="{x0}" y2="{y}"/>'
        '<text class="axis-label" x="{cx}" y="{ly}" text-anchor="middle">{x_label}</text>'
        '<text class="axis-label" transform="translate(14 {cy}) rotate(-90)" '
        'text-anchor="middle">{y_label}</text>',
        x0=_MARGIN_LEFT,
        x1=_MARGIN_LEFT + plot.width,
        y=plot.bottom,
        top=_MARGIN_TOP,
        cx=_MARGIN_LEFT + plot.width / 2,
        ly=_HEIGHT - 6,
        x_label=x_label,
        cy=_MARGIN_TOP + plot.height / 2,
        y_label=y_label,
    )


def _polyline(plot: _LinePlot, s: Series, y_format: Formatter) -> Markup:
    """One series: its line, and a marker with a tooltip per point when they are few."""
    coordinates = " ".join(f"{plot.sx(x)},{plot.sy(y)}" for x, y in s.points)
    line = fmt(
        '<polyline class="series" data-series="{name}" data-points="{n}" points="{points}" '
        'fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"/>',
        name=s.name,
        n=len(s.points),
        points=coordinates,
        color=s.color,
    )
    if len(s.points) > _MAX_MARKERS:
        return line
    return join(
        [
            line,
            join(
                fmt(
                    '<circle class="marker" data-series="{name}" cx="{cx}" cy="{cy}" r="3" '
                    'fill="{color}"><title>{label}, round {x}: {y}</title></circle>',
                    name=s.name,
                    cx=plot.sx(x),
                    cy=plot.sy(y),
                    color=s.color,
                    label=s.label,
                    x=int(x) if x == int(x) else x,
                    y=y_format(y),
                )
                for x, y in s.points
            ),
        ]
    )
