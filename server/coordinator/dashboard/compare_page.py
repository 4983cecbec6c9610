"""The comparison page: two or more runs side by side, and the savings between them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.layout import empty, page, section, status_badge, table
from server.coordinator.dashboard.line_chart import Series, line_chart
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.dashboard.quantities import axis_label, basis_tag, quantity_label
from server.coordinator.dashboard.units import (
    format_bytes,
    format_energy,
    format_percent,
)
from server.coordinator.tables import Round, Run

#: Line colours of the compared runs, in selection order (readable on white).
PALETTE = ("#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490")
MAX_RUNS = len(PALETTE)


@dataclass(frozen=True)
class ComparedRun:
    """One selected run and its recorded rounds (in round order)."""

    run: Run
    rounds: Sequence[Round]

    @property
    def name(self) -> str:
        """Legend text: ``#12 apt``."""
        return f"#{self.run.id} {self.run.method}"


def _series(runs: Sequence[ComparedRun], value: str, cumulative: bool) -> list[Series]:
    series = []
    for i, c in enumerate(runs):
        rounds = [r for r in c.rounds if getattr(r, value) is not None]
        ys = [float(getattr(r, value)) for r in rounds]
        if cumulative:
            ys = list(accumulate(ys))
        points = [(r.round, y) for r, y in zip(rounds, ys, strict=True)]
        series.append(Series(f"run-{c.run.id}", c.name, points, PALETTE[i % len(PALETTE)]))
    return series


def _charts(runs: Sequence[ComparedRun]) -> Markup:
    specs = [
        (
            "accuracy",
            "accuracy",
            False,
            "Global test accuracy per round (measured)",
            format_percent,
        ),
        ("energy", "energy_j", True, "Cumulative client training energy (modelled)", format_energy),
        ("uplink", "uplink_bytes", True, "Cumulative uplink bytes (measured)", format_bytes),
        ("downlink", "downlink_bytes", True, "Cumulative downlink bytes (measured)", format_bytes),
    ]
    keys = {
        "accuracy": "accuracy",
        "energy": "energy",
        "uplink": "uplink_bytes",
        "downlink": "downlink_bytes",
    }
    charts = [
        section(
            title,
            line_chart(
                chart_id=f"compare-{name}",
                title=title,
                series=_series(runs, column, cumulative),
                y_label=axis_label(keys[name]),
                y_format=formatter,
                y_domain=(0.0, 1.0) if name == "accuracy" else None,
                empty_message="None of these runs recorded a round yet.",
            ),
            section_id=f"section-compare-{name}",
        )
        for name, column, cumulative, title, formatter in specs
    ]
    return fmt('<div class="grid" id="compare-charts">{c}</div>', c=join(charts))


def _final_bits(runs: Sequence[ComparedRun]) -> Markup:
    finals = {c.run.id: (c.rounds[-1].global_bits if c.rounds else {}) for c in runs}
    layers: list[str] = []
    for bits in finals.values():
        layers += [layer for layer in bits if layer not in layers]
    if not layers:
        return empty(
            "No per-layer bits recorded (fp32 runs keep 32 bits everywhere).",
            element_id="final-bits-empty",
        )
    rows = [
        fmt(
            '<tr data-layer="{layer}"><td>{layer}</td>{cells}</tr>',
            layer=layer,
            cells=join(
                fmt(
                    '<td class="num">{b}</td>',
                    b=finals[c.run.id].get(layer, "32" if c.run.method == "fp32" else "—"),
                )
                for c in runs
            ),
        )
        for layer in layers
    ]
    headers = [("Layer", ""), *((c.name, "num") for c in runs)]
    return table(headers, rows, table_id="final-bits")


def _baseline(runs: Sequence[ComparedRun]) -> ComparedRun:
    """The first fp32 run selected, else the first run."""
    return next((c for c in runs if c.run.method == "fp32"), runs[0])


def _total(c: ComparedRun, column: str) -> float:
    return float(sum(getattr(r, column) for r in c.rounds))


def _saving(value: float, base: float) -> str:
    return "—" if not base else format_percent(1.0 - value / base)


def _savings(runs: Sequence[ComparedRun]) -> Markup:
    base = _baseline(runs)
    rows = []
    for c in runs:
        if c is base:
            continue
        acc, base_acc = c.run.latest_accuracy, base.run.latest_accuracy
        delta = "—" if acc is None or base_acc is None else f"{100 * (acc - base_acc):+.1f} pp"
        rows.append(
            fmt(
                '<tr data-run="{id}"><td>{name}</td><td class="num">{acc}</td>'
                '<td class="num">{e}</td><td class="num">{up}</td><td class="num">{down}</td></tr>',
                id=c.run.id,
                name=c.name,
                acc=delta,
                e=_saving(_total(c, "energy_j"), _total(base, "energy_j")),
                up=_saving(_total(c, "uplink_bytes"), _total(base, "uplink_bytes")),
                down=_saving(_total(c, "downlink_bytes"), _total(base, "downlink_bytes")),
            )
        )
    headers = [
        ("Run", ""),
        (quantity_label("accuracy", with_unit=False), "num"),
        (quantity_label("energy", with_unit=False), "num"),
        (quantity_label("uplink_bytes", with_unit=False), "num"),
        (quantity_label("downlink_bytes", with_unit=False), "num"),
    ]
    intro = fmt(
        '<p>Against <strong id="compare-baseline">{name}</strong> (the first fp32 run '
        "selected, else the first run), over the rounds each run recorded: accuracy "
        "difference of the latest evaluation, and the share of total energy {m} and bytes "
        "{b} saved.</p>",
        name=base.name,
        m=basis_tag("modelled"),
        b=basis_tag("measured"),
    )
    return join([intro, table(headers, rows, table_id="compare-savings")])


def _picker(choices: Sequence[Run], selected: Sequence[int]) -> Markup:
    boxes = join(
        fmt(
            '<label class="pick"><input type="checkbox" name="run" value="{id}"{c}> '
            "#{id} {task} / {method} {badge}</label>",
            id=r.id,
            task=r.task,
            method=r.method,
            badge=status_badge(r.status),
            c=Markup(" checked") if r.id in selected else "",
        )
        for r in choices
    )
    return fmt(
        '<form method="get" action="/compare" id="compare-form"><fieldset><legend>Runs to '
        "compare (2 to {n})</legend>{boxes}</fieldset>"
        '<button type="submit" id="compare-submit">Compare</button></form>',
        n=MAX_RUNS,
        boxes=boxes,
    )


def compare_page(
    *, viewer: Viewer, runs: Sequence[ComparedRun], choices: Sequence[Run], message: str | None
) -> Markup:
    """The run picker and, with two or more runs, their curves, final bits and savings."""
    parts = [Markup("<h1>Compare runs</h1>")]
    if message:
        parts.append(fmt('<p class="notice" id="compare-message" role="status">{m}</p>', m=message))
    if len(runs) >= 2:
        parts += [
            _charts(runs),
            section("Final bits per layer", _final_bits(runs), section_id="section-final-bits"),
            section("Savings between these runs", _savings(runs), section_id="section-savings"),
        ]
    parts.append(
        section(
            "Choose runs", _picker(choices, [c.run.id for c in runs]), section_id="section-pick"
        )
    )
    return page(title="Compare runs", body=join(parts), viewer=viewer)
