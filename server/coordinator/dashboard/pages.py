"""Whole dashboard pages: sign-in, errors, the runs overview and one run's detail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from server.coordinator.crud.tokens import CREATE_COMMAND
from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.heatmap import HeatCell, heatmap
from server.coordinator.dashboard.layout import (
    REFRESH_S,
    empty,
    is_active,
    page,
    run_progress,
    section,
    status_badge,
)
from server.coordinator.dashboard.line_chart import Series, line_chart
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.dashboard.tables import (
    policy_table,
    rounds_table,
    runs_table,
    savings_table,
)
from server.coordinator.dashboard.units import (
    format_bytes,
    format_energy,
    format_number,
    format_percent,
    format_time,
)
from server.coordinator.tables import Policy, Round, Run


def login_page(
    *, next_path: str, csrf_token: str, error: str | None = None, notice: str | None = None
) -> Markup:
    """The sign-in form: one password field for an API token, and the form's CSRF token."""
    message = Markup("")
    if error:
        message = fmt('<p class="error" id="login-error">{error}</p>', error=error)
    elif notice:
        message = fmt('<p class="muted" id="login-notice">{notice}</p>', notice=notice)
    body = fmt(
        '<form class="login card" id="login-form" method="post" action="/login">'
        "<h1>Sign in</h1>{message}"
        '<label for="token">API token</label>'
        '<input type="password" id="token" name="token" autocomplete="current-password" '
        "required autofocus>"
        '<input type="hidden" name="next" value="{next}">'
        '<input type="hidden" name="csrf_token" value="{csrf}">'
        '<p class="muted">An operator or admin token, e.g. from '
        '<code id="login-command">{command}</code> (or <code>--role operator</code>). '
        "Signing in opens a session of this dashboard only: the browser keeps a session "
        "cookie, never the token. The dashboard is read-only.</p>"
        '<button type="submit" id="login-submit">Sign in</button></form>',
        message=message,
        next=next_path,
        csrf=csrf_token,
        command=CREATE_COMMAND,
    )
    return page(title="Sign in", body=body)


def error_page(*, title: str, message: str, viewer: Viewer | None = None) -> Markup:
    """A page that explains what went wrong and links back to the runs."""
    body = fmt(
        '<h1 id="error-title">{title}</h1><p id="error-message">{message}</p>'
        '<p><a href="/">Back to the runs</a></p>',
        title=title,
        message=message,
    )
    return page(title=title, body=body, viewer=viewer)


def _stat(label: str, value: str, stat_id: str) -> Markup:
    return fmt(
        '<div class="stat" id="{id}"><div class="value">{value}</div>'
        '<div class="label">{label}</div></div>',
        id=stat_id,
        value=value,
        label=label,
    )


def overview_page(
    *,
    viewer: Viewer,
    runs: Sequence[Run],
    count: int,
    totals: Mapping[str, float],
    policies: Sequence[Policy],
    policy_count: int,
) -> Markup:
    """Fleet totals, the newest runs with status and progress, and the policy history."""
    stats = join(
        [
            _stat("active runs", format_number(totals["active_runs"]), "stat-active-runs"),
            _stat("rounds completed", format_number(totals["rounds_completed"]), "stat-rounds"),
            _stat("uplink", format_bytes(totals["uplink_bytes"]), "stat-uplink"),
            _stat("downlink", format_bytes(totals["downlink_bytes"]), "stat-downlink"),
            _stat("modelled energy", format_energy(totals["energy_j"]), "stat-energy"),
        ]
    )
    shown = runs_table(runs)
    if count > len(runs):
        shown = fmt(
            '{table}<p class="muted">Showing the {n} newest of {count} runs.</p>',
            table=shown,
            n=len(runs),
            count=count,
        )
    body = fmt(
        '<h1>Runs</h1><div class="stats">{stats}</div>{runs}{policies}',
        stats=stats,
        runs=section("Runs", shown, section_id="runs-section"),
        policies=section(
            "Policy history",
            policy_table(policies, count=policy_count),
            section_id="policy-section",
        ),
    )
    refresh = REFRESH_S if any(is_active(run) for run in runs) else None
    return page(title="Runs", body=body, viewer=viewer, refresh_s=refresh)


def _facts(run: Run) -> Markup:
    facts: list[tuple[str, Any]] = [
        ("Status", status_badge(run.status)),
        ("Progress", run_progress(run)),
        ("Task", run.task),
        ("Method", run.method),
        ("Clients", run.clients),
        ("Fraction", format_number(run.fraction)),
        ("Alpha", format_number(run.alpha)),
        ("Seed", run.seed),
        ("Policy", run.policy or "fleet policy"),
        ("Latest accuracy", format_percent(run.latest_accuracy)),
        ("Created", format_time(run.created_at)),
        ("Started", format_time(run.started_at)),
        ("Finished", format_time(run.finished_at)),
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


def _round_charts(rounds: Sequence[Round]) -> Markup:
    accuracy = Series(
        "accuracy",
        "Accuracy",
        [(r.round, r.accuracy) for r in rounds if r.accuracy is not None],
        "#2563eb",
    )
    energy = Series("energy", "Energy", [(r.round, r.energy_j) for r in rounds], "#d97706")
    uplink = Series("uplink", "Uplink", [(r.round, r.uplink_bytes) for r in rounds], "#7c3aed")
    downlink = Series(
        "downlink", "Downlink", [(r.round, r.downlink_bytes) for r in rounds], "#059669"
    )
    charts = [
        (
            "Accuracy",
            line_chart(
                chart_id="chart-accuracy",
                title="Global accuracy per round",
                series=[accuracy],
                y_label="accuracy",
                y_format=format_percent,
                y_domain=(0.0, 1.0),
                empty_message="No round was evaluated yet.",
            ),
        ),
        (
            "Energy",
            line_chart(
                chart_id="chart-energy",
                title="Modelled client energy per round",
                series=[energy],
                y_label="energy",
                y_format=format_energy,
            ),
        ),
        (
            "Traffic",
            line_chart(
                chart_id="chart-bytes",
                title="Uplink and downlink bytes per round",
                series=[uplink, downlink],
                y_label="bytes",
                y_format=format_bytes,
            ),
        ),
    ]
    return join(
        section(title, chart, section_id=f"section-{title.lower()}") for title, chart in charts
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
        title="Mean bits per layer and round across devices",
        layers=_layer_order(summary, rounds),
        rounds=sorted({row["round"] for row in summary}),
        cells=cells,
        empty_message="No per-layer precision recorded for this run yet "
        "(fp32 runs keep every layer at 32 bits).",
    )


def run_page(
    *,
    viewer: Viewer,
    run: Run,
    rounds: Sequence[Round],
    summary: Sequence[Mapping[str, Any]],
    policies: Sequence[Policy],
    policy_count: int,
) -> Markup:
    """One run: facts, savings, accuracy / energy / traffic curves, bits heatmap, policies.

    Parameters
    ----------
    viewer : Viewer
        The signed-in token.
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
    """
    if rounds:
        charts = fmt('<div class="grid" id="charts">{charts}</div>', charts=_round_charts(rounds))
        details = fmt(
            '<details id="rounds-details"><summary>Per-round numbers ({n} rounds)'
            "</summary>{table}</details>",
            n=len(rounds),
            table=rounds_table(rounds),
        )
    else:
        charts = section(
            "Rounds",
            empty(
                "No rounds recorded yet: the charts appear after the first round ends.",
                element_id="rounds-empty",
            ),
            section_id="section-rounds",
        )
        details = Markup("")
    used = {r.policy_version for r in rounds if r.policy_version is not None}
    body = fmt(
        '<h1 id="run-title">Run #{id} — {task} / {method} {badge}</h1>{facts}{savings}'
        "{charts}{heatmap}{policies}",
        id=run.id,
        task=run.task,
        method=run.method,
        badge=status_badge(run.status),
        facts=section(
            "Run",
            fmt("{facts}{details}", facts=_facts(run), details=details),
            section_id="run-section",
        ),
        savings=section(
            "Savings vs fp32", savings_table(run.savings), section_id="savings-section"
        ),
        charts=charts,
        heatmap=section(
            "Per-layer bits", _bits_heatmap(summary, rounds), section_id="section-bits"
        ),
        policies=section(
            "Policy history",
            policy_table(policies, count=policy_count, used=used),
            section_id="policy-section",
        ),
    )
    return page(
        title=f"Run {run.id}",
        body=body,
        viewer=viewer,
        refresh_s=REFRESH_S if is_active(run) else None,
    )
