"""Server-side SVG charts: line charts with axes and a layers x rounds heatmap."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from server.coordinator.dashboard.markup import Markup, fmt, join

# Charts are inline SVG with presentation attributes, never ``style``, so the pages' strict
# Content-Security-Policy holds; stable ids and data-* counts let tests and tools check them.

Formatter = Callable[[float], str]

#: Anchors of the viridis colour map (perceptually uniform, readable in greyscale).
_VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
_WIDTH = 640
_HEIGHT = 260
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 70, 16, 30, 46
_MAX_MARKERS = 120
_MAX_LABEL_CHARS = 24
_HEATMAP_MIN_PLOT_W, _HEATMAP_MAX_PLOT_W = 360, 1100


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


@dataclass(frozen=True)
class HeatCell:
    """One heatmap cell: the value that picks its colour and a hover text."""

    value: float
    tooltip: str


def _nice_step(span: float, target: int) -> float:
    """A 1-2-2.5-5 x 10^k step that cuts ``span`` into about ``target`` pieces."""
    raw = span / max(target, 1)
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= multiple * magnitude * (1 + 1e-9):
            return multiple * magnitude
    return 10 * magnitude


def _ticks(low: float, high: float, step: float) -> list[float]:
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _y_domain(series: Sequence[Series]) -> tuple[float, float]:
    values = [y for s in series for _, y in s.points]
    low, high = min(0.0, min(values)), max(values)
    if high <= low:
        high = low + 1.0
    step = _nice_step(high - low, 5)
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _x_domain(series: Sequence[Series]) -> tuple[float, float]:
    xs = [x for s in series for x, _ in s.points]
    low, high = min(xs), max(xs)
    if high <= low:
        low, high = low - 1, high + 1
    return low, high


def _integer_ticks(low: float, high: float, target: int) -> list[float]:
    step = max(1.0, math.ceil(_nice_step(high - low, target)))
    return [t for t in _ticks(low, high, step) if t == int(t)]


def _empty(chart_id: str, message: str) -> Markup:
    return fmt('<p class="empty" id="{id}-empty">{message}</p>', id=chart_id, message=message)


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
        return _empty(chart_id, empty_message)
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
    width = _WIDTH - _MARGIN_LEFT - _MARGIN_RIGHT
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
    step = _nice_step(plot.y_high - plot.y_low, 5)
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
        for tick in _ticks(plot.y_low, plot.y_high, step)
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
        for tick in _integer_ticks(plot.x_low, plot.x_high, 8)
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


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def color_scale(t: float) -> str:
    """The viridis colour at ``t`` in [0, 1] (clamped) as ``#rrggbb``."""
    t = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    frac = t - i
    low, high = _hex_to_rgb(_VIRIDIS[i]), _hex_to_rgb(_VIRIDIS[i + 1])
    r, g, b = (round(a + (c - a) * frac) for a, c in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _text_color(fill: str) -> str:
    r, g, b = _hex_to_rgb(fill)
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL_CHARS else label[: _MAX_LABEL_CHARS - 1] + "…"


def _legend_scale(low: int, high: int, top: float, left: float) -> Markup:
    """Colour swatches from ``low`` to ``high`` bits: one per integer when they are few."""
    whole = high - low <= 16
    swatches = high - low + 1 if whole else 8
    width = 28
    parts = [fmt('<text class="legend-label" x="{x}" y="{y}">mean bits</text>', x=left, y=top + 13)]
    left += 72
    labelled = range(swatches) if whole else (0, swatches // 2, swatches - 1)
    for i in range(swatches):
        value = low + (high - low) * i / (swatches - 1)
        label = f"{value:.0f}" if whole else f"{value:.3g}"
        parts.append(
            fmt(
                '<rect class="legend-swatch" x="{x}" y="{y}" width="{w}" height="14" fill="{fill}">'
                "<title>{label} bits</title></rect>",
                x=left + i * width,
                y=top,
                w=width,
                fill=color_scale(i / (swatches - 1)),
                label=label,
            )
        )
        if i in labelled:
            parts.append(
                fmt(
                    '<text class="tick" x="{x}" y="{y}" text-anchor="middle">{label}</text>',
                    x=left + i * width + width / 2,
                    y=top + 28,
                    label=label,
                )
            )
    return join(parts)


def heatmap(
    *,
    chart_id: str,
    title: str,
    layers: Sequence[str],
    rounds: Sequence[int],
    cells: Mapping[tuple[str, int], HeatCell],
    empty_message: str = "No data yet.",
) -> Markup:
    """An SVG heatmap of layers (rows) x rounds (columns) with a colour legend.

    Parameters
    ----------
    chart_id : str
        ``id`` of the ``<svg>``; an empty heatmap renders ``<p id="{chart_id}-empty">``.
    title : str
        Accessible title.
    layers : Sequence[str]
        Row labels, top to bottom.
    rounds : Sequence[int]
        Column labels, left to right.
    cells : Mapping[tuple[str, int], HeatCell]
        Value of ``(layer, round)``; a missing pair renders a grey ``rect.cell-missing``.
    empty_message : str (default: "No data yet.")
        Shown instead of the heatmap when there are no cells.

    Returns
    -------
    Markup
        ``<svg id=chart_id data-layers=L data-rounds=R data-cells=C>`` with one
        ``<rect class="cell">`` per stored value (C = L x R when every pair is stored).
    """
    if not cells or not layers or not rounds:
        return _empty(chart_id, empty_message)
    grid = _heat_grid(layers, rounds, [cell.value for cell in cells.values()])
    parts = [
        fmt('<title id="{id}-title">{title}</title>', id=chart_id, title=title),
        *(_heat_row(grid, row, layer, rounds, cells) for row, layer in enumerate(layers)),
        _heat_x_axis(grid, rounds),
        _legend_scale(grid.low, grid.high, grid.bottom + 46, grid.label_w),
    ]
    drawn = sum((layer, round_) in cells for layer in layers for round_ in rounds)
    return fmt(
        '<svg id="{id}" class="chart heatmap" xmlns="http://www.w3.org/2000/svg" '
        'viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-labelledby="{id}-title" data-layers="{layers}" data-rounds="{rounds}" '
        'data-cells="{cells}">{body}</svg>',
        id=chart_id,
        w=grid.width,
        h=grid.height,
        layers=len(layers),
        rounds=len(rounds),
        cells=drawn,
        body=join(parts),
    )


@dataclass(frozen=True)
class _HeatGrid:
    """Geometry and colour range of a heatmap (cells start at y = top)."""

    low: int
    high: int
    label_w: float
    plot_w: float
    cell_w: float
    cell_h: int
    top: int
    bottom: float  # of the cells
    width: float  # of the SVG
    height: float


def _heat_grid(layers: Sequence[str], rounds: Sequence[int], values: list[float]) -> _HeatGrid:
    """Cell sizes from the number of layers and rounds; the colour range from the values."""
    low, high = math.floor(min(values)), math.ceil(max(values))
    if high <= low:
        high = low + 1
    label_w = min(190, 12 + 7 * max(len(_short(layer)) for layer in layers))
    # Wide enough to read a few rounds, capped so hundreds of rounds still fit a screen.
    plot_w = min(_HEATMAP_MAX_PLOT_W, max(_HEATMAP_MIN_PLOT_W, 80 * len(rounds)))
    cell_h, top = 22 if len(layers) <= 24 else 12, 8
    bottom = top + cell_h * len(layers)
    return _HeatGrid(
        low=low,
        high=high,
        label_w=label_w,
        plot_w=plot_w,
        cell_w=plot_w / len(rounds),
        cell_h=cell_h,
        top=top,
        bottom=bottom,
        width=label_w + plot_w + _MARGIN_RIGHT,
        height=bottom + 76,
    )


def _heat_row(
    grid: _HeatGrid,
    row: int,
    layer: str,
    rounds: Sequence[int],
    cells: Mapping[tuple[str, int], HeatCell],
) -> Markup:
    """A layer's label and its cells, one per round (grey where no value is stored)."""
    y = grid.top + row * grid.cell_h
    parts = [
        fmt(
            '<text class="tick tick-y" x="{x}" y="{y}" text-anchor="end">{label}'
            "<title>{layer}</title></text>",
            x=grid.label_w - 6,
            y=y + grid.cell_h / 2 + 4,
            label=_short(layer),
            layer=layer,
        )
    ]
    for col, round_ in enumerate(rounds):
        x = round(grid.label_w + col * grid.cell_w, 2)
        cell = cells.get((layer, round_))
        if cell is None:
            parts.append(
                fmt(
                    '<rect class="cell-missing" x="{x}" y="{y}" width="{w}" height="{h}" '
                    'fill="#e5e7eb"><title>{layer}, round {r}: no data</title></rect>',
                    x=x,
                    y=y,
                    w=round(grid.cell_w, 2),
                    h=grid.cell_h,
                    layer=layer,
                    r=round_,
                )
            )
        else:
            parts.append(_heat_cell(grid, x, y, layer, round_, cell))
    return join(parts)


def _heat_cell(
    grid: _HeatGrid, x: float, y: float, layer: str, round_: int, cell: HeatCell
) -> Markup:
    """One stored value: a coloured rect, labelled with the value when the cell is large."""
    fill = color_scale((cell.value - grid.low) / (grid.high - grid.low))
    text = Markup("")
    if grid.cell_w >= 26 and grid.cell_h >= 18:
        text = fmt(
            '<text class="cell-label" x="{x}" y="{y}" text-anchor="middle" '
            'fill="{color}">{value}</text>',
            x=round(x + grid.cell_w / 2, 2),
            y=y + grid.cell_h / 2 + 4,
            color=_text_color(fill),
            value=f"{cell.value:.1f}" if grid.cell_w >= 34 else f"{cell.value:.0f}",
        )
    return fmt(
        '<g><title>{tooltip}</title><rect class="cell" x="{x}" y="{y}" width="{w}" '
        'height="{h}" fill="{fill}" data-layer="{layer}" data-round="{r}" '
        'data-bits="{value}"/>{text}</g>',
        tooltip=cell.tooltip,
        x=x,
        y=y,
        w=round(grid.cell_w, 2),
        h=grid.cell_h,
        fill=fill,
        layer=layer,
        r=round_,
        value=f"{cell.value:.4g}",
        text=text,
    )


def _heat_x_axis(grid: _HeatGrid, rounds: Sequence[int]) -> Markup:
    """Round labels under the columns (at most about ten) and the axis label."""
    return join(
        [
            *(
                fmt(
                    '<text class="tick tick-x" x="{x}" y="{y}" text-anchor="middle">{label}</text>',
                    x=round(grid.label_w + (int(tick) + 0.5) * grid.cell_w, 2),
                    y=grid.bottom + 16,
                    label=rounds[int(tick)],
                )
                for tick in _integer_ticks(0, len(rounds) - 1, 10)
            ),
            fmt(
                '<text class="axis-label" x="{x}" y="{y}" text-anchor="middle">Round</text>',
                x=grid.label_w + grid.plot_w / 2,
                y=grid.bottom + 34,
            ),
        ]
    )
