"""Server-side SVG heatmap of layers x rounds with a viridis colour legend."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.coordinator.dashboard.charts import MARGIN_RIGHT, empty, integer_ticks
from server.coordinator.dashboard.markup import Markup, fmt, join

#: Anchors of the viridis colour map (perceptually uniform, readable in greyscale).
_VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
_MAX_LABEL_CHARS = 24
_HEATMAP_MIN_PLOT_W, _HEATMAP_MAX_PLOT_W = 360, 1100


@dataclass(frozen=True)
class HeatCell:
    """One heatmap cell: the value that picks its colour and a hover text."""

    value: float
    tooltip: str


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
        return empty(chart_id, empty_message)
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
        width=label_w + plot_w + MARGIN_RIGHT,
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
                for tick in integer_ticks(0, len(rounds) - 1, 10)
            ),
            fmt(
                '<text class="axis-label" x="{x}" y="{y}" text-anchor="middle">Round</text>',
                x=grid.label_w + grid.plot_w / 2,
                y=grid.bottom + 34,
            ),
        ]
    )
