"""One run's page: facts and controls, savings, curves, the bits heatmap, its actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.heatmap import HeatCell, heatmap
from server.coordinator.dashboard.layout import empty, page, run_progress, section, status_badge
from server.coordinator.dashboard.line_chart import Series, line_chart
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.dashboard.quantities import axis_label, quantity_label
from server.coordinator.dashboard.run_controls import run_controls
from server.coordinator.dashboard.tables import (
    actions_table,
    policy_table,
    rounds_table,
    savings_table,
)
from server.coordinator.dashboard.units import (
    format_bytes,
    format_energy,
    format_number,
    format_percent,
    format_time,
)
from server.coordinator.tables import ACTIVE_RUN_STATUSES, ConsoleAction, Policy, Round, Run


@dataclass(frozen=True)
class RunView:
    """Everything the run page shows, read by the route.

    Parameters
    ----------
    run : Run
        The run shown.
    rounds : Sequence[Round]
        Its recorded rounds, in round order.
    summary : Sequence[Mapping[str, Any]]
        ``crud.precision_summary`` rows (mean bits per layer and round).
    policies : Sequence[Policy]
        Policy versions, newest first; the ones the run's rounds used are highlighted.
    policy_count : int
        How many versions exist in total.
    queue_position : int | None (default: None)
        Place in the admission queue while queued.
    has_checkpoint : bool (default: False)
        A packed global model is stored (the downloads are offered once the run ended).
    actions : Sequence[ConsoleAction] (default: ())
        Actions on this run (console or API), newest first.
    totals : Mapping[str, Any] (default: {})
        ``crud.run_totals`` (energy_j, uplink_bytes, downlink_bytes summed over rounds).
    """

    run: Run
    rounds: Sequence[Round]
    summary: Sequence[Mapping[str, Any]]
    policies: Sequence[Policy]
    policy_count: int
    queue_position: int | None = None
    has_checkpoint: bool = False
    actions: Sequence[ConsoleAction] = field(default_factory=tuple)
    totals: Mapping[str, Any] = field(default_factory=dict)


def _live(name: str, value: object) -> Markup:
    return fmt('<span data-live="{name}">{value}</span>', name=name, value=value)


def _facts(view: RunView) -> Markup:
    run = view.run
    queue = "—" if view.queue_position is None else f"#{view.queue_position} in the queue"
    facts: list[tuple[str, Any]] = [
        ("Status", _live("status", status_badge(run.status))),
        ("Progress", _live("progress", run_progress(run))),
        ("Queue position", _live("queue", queue)),
        ("Task", run.task),
        ("Method", run.method),
        ("Clients", run.clients),
        ("Fraction of clients per round", format_number(run.fraction)),
        ("Dirichlet alpha", format_number(run.alpha)),
        ("Seed", run.seed),
        ("Policy", run.policy or "fleet policy"),
        (quantity_label("accuracy"), _live("accuracy", format_percent(run.latest_accuracy))),
        ("Created", format_time(run.created_at)),
        ("Started", format_time(run.started_at)),
        ("Finished", _live("finished", format_time(run.finished_at))),
        (quantity_label("energy"), _live("energy", format_energy(view.totals.get("energy_j", 0)))),
        (
            quantity_label("uplink_bytes"),
            _live("uplink", format_bytes(view.totals.get("uplink_bytes", 0))),
        ),
        (
            quantity_label("downlink_bytes"),
            _live("downlink", format_bytes(view.totals.get("downlink_bytes", 0))),
        ),
        ("Flower run", "—" if run.flower_run_id is None else run.flower_run_id),
    ]
    items = join(
        fmt("<dt>{label}</dt><dd>{value}</dd>", label=label, value=value) for label, value in facts
    )
    error = Markup("")
    if run.error:
        error = fmt(
            '<p class="error" id="run-error"><strong>Error:</strong> {error}</p>', error=run.error
        )
    return fmt('<dl class="facts" id="run-facts">{items}</dl>{error}', items=items, error=error)


def _chart(chart_id: str, title: str, series: list[Series], y_label: str, **options: Any) -> Markup:
    return line_chart(chart_id=chart_id, title=title, series=series, y_label=y_label, **options)


def _chart_section(title: str, keys: tuple[str, ...], chart: Markup) -> Markup:
    """A chart under the labels (name, unit, measured/modelled) of what it draws."""
    labels = join((quantity_label(key) for key in keys), Markup(" &middot; "))
    return section(
        title,
        fmt("<p>{labels}</p>{chart}", labels=labels, chart=chart),
        section_id=f"section-{title.lower()}",
    )


def _round_charts(rounds: Sequence[Round]) -> Markup:
    accuracy = [(r.round, r.accuracy) for r in rounds if r.accuracy is not None]
    traffic = [
        Series("uplink", "Uplink", [(r.round, r.uplink_bytes) for r in rounds], "#7c3aed"),
        Series("downlink", "Downlink", [(r.round, r.downlink_bytes) for r in rounds], "#047857"),
    ]
    energy = [Series("energy", "Energy", [(r.round, r.energy_j) for r in rounds], "#b45309")]
    accuracy_chart = _chart(
        "chart-accuracy",
        "Global test accuracy per round (measured)",
        [Series("accuracy", "Accuracy", accuracy, "#2563eb")],
        axis_label("accuracy"),
        y_format=format_percent,
        y_domain=(0.0, 1.0),
        empty_message="No round was evaluated yet.",
    )
    energy_chart = _chart(
        "chart-energy",
        "Client training energy per round (modelled)",
        energy,
        axis_label("energy"),
        y_format=format_energy,
    )
    bytes_chart = _chart(
        "chart-bytes",
        "Uplink and downlink bytes per round (measured)",
        traffic,
        "bytes (B, measured)",
        y_format=format_bytes,
    )
    return join(
        [
            _chart_section("Accuracy", ("accuracy",), accuracy_chart),
            _chart_section("Energy", ("energy",), energy_chart),
            _chart_section("Traffic", ("uplink_bytes", "downlink_bytes"), bytes_chart),
        ]
    )


def _layer_order(summary: Sequence[Mapping[str, Any]], rounds: Sequence[Round]) -> list[str]:
    """Layers in model order (the global bits' key order), then any others as they appear."""
    seen = {row["layer"] for row in summary}
    ordered: list[str] = []
    for r in reversed(rounds):
        ordered = [layer for layer in r.global_bits if layer in seen]
        if ordered:
            break
    for row in summary:
        if row["layer"] not in ordered:
            ordered.append(row["layer"])
    return ordered


def _bits_heatmap(summary: Sequence[Mapping[str, Any]], rounds: Sequence[Round]) -> Markup:
    cells = {
        (row["layer"], row["round"]): HeatCell(
            value=float(row["mean_bits"]),
            tooltip=(
                f"{row['layer']}, round {row['round']}: mean {float(row['mean_bits']):.2f}"
                f" bits (min {row['min_bits']}, max {row['max_bits']}, "
                f"{row['devices']} devices)"
            ),
        )
        for row in summary
    }
    return heatmap(
        chart_id="chart-bits",
        title="Mean bits per weight, per layer and round, across devices (measured)",
        layers=_layer_order(summary, rounds),
        rounds=sorted({row["round"] for row in summary}),
        cells=cells,
        empty_message="No per-layer precision recorded for this run yet "
        "(fp32 runs keep every layer at 32 bits).",
    )


def _rounds_part(rounds: Sequence[Round]) -> tuple[Markup, Markup]:
    """The charts grid and the per-round table (or the empty state and nothing)."""
    if not rounds:
        message = "No rounds recorded yet: the charts appear after the first round ends."
        charts = section(
            "Rounds", empty(message, element_id="rounds-empty"), section_id="section-rounds"
        )
        return charts, Markup("")
    charts = fmt('<div class="grid" id="charts">{charts}</div>', charts=_round_charts(rounds))
    details = fmt(
        '<details id="rounds-details"><summary>Per-round numbers ({n} rounds)'
        "</summary>{table}</details>",
        n=len(rounds),
        table=rounds_table(rounds),
    )
    return charts, details


def _live_notice(run: Run) -> Markup:
    """Where the polling script says that new rounds arrived (hidden until then)."""
    if run.status not in ACTIVE_RUN_STATUSES:
        return Markup("")
    return fmt(
        '<p class="notice" id="live-notice" role="status" hidden>'
        '<span id="live-notice-text"></span> <a href="/runs/{id}">Reload the charts</a></p>',
        id=run.id,
    )


def _run_section(viewer: Viewer, view: RunView, details: Markup) -> Markup:
    """Facts (live-updated while active), the controls and the per-round numbers."""
    run = view.run
    body = fmt(
        '<div id="run-live" data-live-url="/runs/{id}/live" data-round="{round}" '
        'data-status="{status}">{notice}{facts}</div>{controls}{details}',
        id=run.id,
        round=run.current_round,
        status=run.status,
        notice=_live_notice(run),
        facts=_facts(view),
        controls=run_controls(viewer, run, has_checkpoint=view.has_checkpoint),
        details=details,
    )
    return section("Run", body, section_id="run-section")


def _title(run: Run) -> Markup:
    return fmt(
        '<h1 id="run-title">Run #{id} — {task} / {method} {badge}</h1>',
        id=run.id,
        task=run.task,
        method=run.method,
        badge=status_badge(run.status),
    )


def run_page(*, viewer: Viewer, view: RunView) -> Markup:
    """One run: facts and controls, savings, curves, bits heatmap, actions, policies."""
    run = view.run
    charts, details = _rounds_part(view.rounds)
    used = {r.policy_version for r in view.rounds if r.policy_version is not None}
    savings = savings_table(run.savings)
    bits = _bits_heatmap(view.summary, view.rounds)
    policies = policy_table(view.policies, count=view.policy_count, used=used)
    body = join(
        [
            _title(run),
            _run_section(viewer, view, details),
            section("Savings vs fp32 FedAvg", savings, section_id="savings-section"),
            charts,
            section("Per-layer bits", bits, section_id="section-bits"),
            section("Actions", actions_table(view.actions), section_id="actions-section"),
            section("Policy history", policies, section_id="policy-section"),
        ]
    )
    active = run.status in ACTIVE_RUN_STATUSES
    return page(title=f"Run {run.id}", body=body, viewer=viewer, script=active)
