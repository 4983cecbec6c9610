"""HTML tables of the dashboard: runs, rounds, savings versus fp32, policy history."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from server.coordinator.dashboard.layout import empty, run_progress, status_badge, table
from server.coordinator.dashboard.markup import Markup, fmt
from server.coordinator.dashboard.quantities import Basis, basis_tag, quantity_label
from server.coordinator.dashboard.units import (
    format_bytes,
    format_energy,
    format_number,
    format_percent,
    format_time,
)
from server.coordinator.tables import ConsoleAction, Policy, Round, Run

_NUM = "num"


def runs_table(runs: Sequence[Run]) -> Markup:
    """One row per run: id, task, method, status, progress, accuracy, timestamps.

    The cells that change while a run is active carry ``data-field`` (the overview's script
    updates them in place from ``overview_summary``).
    """
    if not runs:
        return empty(
            "No runs yet. Start one from New run (or POST /api/v1/runs).", element_id="runs-empty"
        )
    rows = [
        fmt(
            '<tr class="run-row" data-run="{id}" data-status="{state}"><td><a href="/runs/{id}">'
            '#{id}</a></td><td>{task}</td><td>{method}</td><td data-field="status">{status}</td>'
            '<td data-field="progress">{progress}</td><td class="num" data-field="accuracy">'
            '{accuracy}</td><td class="num">{clients}</td><td>{created}</td>'
            '<td data-field="finished">{finished}</td></tr>',
            id=run.id,
            state=run.status,
            task=run.task,
            method=run.method,
            status=status_badge(run.status),
            progress=run_progress(run),
            accuracy=format_percent(run.latest_accuracy),
            clients=run.clients,
            created=format_time(run.created_at),
            finished=format_time(run.finished_at),
        )
        for run in runs
    ]
    headers = [
        ("Run", ""),
        ("Task", ""),
        ("Method", ""),
        ("Status", ""),
        ("Progress", ""),
        ("Accuracy", _NUM),
        ("Clients", _NUM),
        ("Created", ""),
        ("Finished", ""),
    ]
    return table(headers, rows, table_id="runs")


def rounds_table(rounds: Sequence[Round]) -> Markup:
    """Every recorded round with its aggregate numbers (the charts' data, as text)."""
    rows = [
        fmt(
            '<tr><td class="num">{round}</td><td class="num">{accuracy}</td>'
            '<td class="num">{loss}</td><td class="num">{energy}</td><td class="num">{up}</td>'
            '<td class="num">{down}</td><td class="num">{participants}</td>'
            '<td class="num">{failures}</td><td class="num">{rejections}</td>'
            '<td class="num">{bits}</td><td class="num">{policy}</td></tr>',
            round=r.round,
            accuracy=format_percent(r.accuracy),
            loss=format_number(r.loss),
            energy=format_energy(r.energy_j),
            up=format_bytes(r.uplink_bytes),
            down=format_bytes(r.downlink_bytes),
            participants=r.participants,
            failures=r.failures,
            rejections=r.rejections,
            bits=format_number(r.mean_bits),
            policy="—" if r.policy_version is None else f"v{r.policy_version}",
        )
        for r in rounds
    ]
    headers = [
        (label, _NUM)
        for label in (
            "Round",
            "Accuracy (%)",
            "Loss",
            "Energy (J, modelled)",
            "Uplink (B)",
            "Downlink (B)",
            "Devices",
            "Failures",
            "Rejections",
            "Mean bits per weight",
            "Policy",
        )
    ]
    return table(headers, rows, table_id="rounds")


def _saving_value(value: Any) -> Markup:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return fmt("<code>{v}</code>", v=json.dumps(value, sort_keys=True, default=str))
    if -1.0 <= value <= 1.0:
        meter = fmt(
            '<meter min="0" max="1" value="{v}">{pct}</meter>',
            v=max(value, 0.0),
            pct=format_percent(value),
        )
        return fmt("{pct} {meter}", pct=format_percent(value), meter=meter)
    return fmt("{v}", v=format_number(value))


#: How the fp32 side of each saving is obtained (the run's side: ``QUANTITIES[key].basis``).
_BASELINES: dict[str, tuple[Basis, str]] = {
    "energy": ("modelled", "fp32 FedAvg priced on the same client-rounds"),
    "parameter_memory": ("computed", "4 bytes per parameter"),
    "uplink_bytes": ("computed", "4 bytes per parameter per trained reply"),
    "downlink_bytes": ("computed", "4 bytes per parameter per device sent a model"),
}


def savings_table(savings: Mapping[str, Any] | None) -> Markup:
    """The run's savings versus fp32 (shares shown as percentages), each labelled.

    Every row names the quantity and unit and says how both sides were obtained: the run's
    figure (measured bytes, modelled energy) and the fp32 baseline (computed or modelled).
    """
    if not savings:
        return empty(
            "No savings estimate yet: the launcher stores it when the run ends.",
            element_id="savings-empty",
        )
    rows = [
        fmt(
            '<tr data-key="{key}"><td>{label}</td><td>{value}</td><td>{baseline}</td></tr>',
            key=key,
            label=quantity_label(key),
            value=_saving_value(value),
            baseline=_baseline(key),
        )
        for key, value in savings.items()
    ]
    headers = [("Quantity (this run)", ""), ("Saving vs fp32", ""), ("fp32 baseline", "")]
    return table(headers, rows, table_id="savings")


def _baseline(key: str) -> Markup:
    basis, how = _BASELINES.get(key, ("computed", "cost model"))
    return fmt('{tag} <span class="muted">{how}</span>', tag=basis_tag(basis), how=how)


def _overrides(overrides: Mapping[str, Any] | None) -> Markup:
    if not overrides:
        return Markup('<span class="muted">none</span>')
    return fmt("<code>{json}</code>", json=json.dumps(overrides, sort_keys=True))


def policy_table(
    policies: Sequence[Policy],
    *,
    count: int,
    used: Collection[int] = (),
    used_label: str = "this run",
) -> Markup:
    """Policy versions, newest first; versions in ``used`` are highlighted as ``used_label``."""
    if not policies:
        return empty("No policy versions stored.", element_id="policies-empty")
    rows = [
        fmt(
            '<tr class="policy-row{current}" data-version="{version}">'
            '<td class="num">v{version}{tag}</td><td class="num">{t_min}</td>'
            '<td class="num">{t_max}</td><td class="num">{bits_min}–{bits_max}</td>'
            '<td class="num">{bits_init}</td><td class="num">{check_every}</td>'
            '<td>{rounding}</td><td class="num">{act}/{err}</td><td>{adaptive}</td>'
            '<td class="wrap">{overrides}</td><td>{author}</td><td class="wrap">{note}</td>'
            "<td>{created}</td></tr>",
            current=" current" if p.version in used else "",
            version=p.version,
            tag=fmt(' <span class="muted">({t})</span>', t=used_label) if p.version in used else "",
            t_min=format_number(p.t_min),
            t_max=format_number(p.t_max),
            bits_min=p.bits_min,
            bits_max=p.bits_max,
            bits_init=p.bits_init,
            check_every=p.check_every,
            rounding=p.rounding,
            act=p.act_bits,
            err=p.err_bits,
            adaptive="yes" if p.adaptive else "no",
            overrides=_overrides(p.overrides),
            author=p.author,
            note=p.note or "",
            created=format_time(p.created_at),
        )
        for p in policies
    ]
    headers = [
        ("Version", _NUM),
        ("T min", _NUM),
        ("T max", _NUM),
        ("Bits", _NUM),
        ("Init", _NUM),
        ("Check every", _NUM),
        ("Rounding", ""),
        ("Act/err bits", _NUM),
        ("Adaptive", ""),
        ("Overrides", ""),
        ("Author", ""),
        ("Note", ""),
        ("Created", ""),
    ]
    shown = table(headers, rows, table_id="policies")
    if count > len(policies):
        shown = fmt(
            '{table}<p class="muted">Showing the {n} newest of {count} versions.</p>',
            table=shown,
            n=len(policies),
            count=count,
        )
    return shown


def actions_table(actions: Sequence[ConsoleAction]) -> Markup:
    """Actions from the console or the API, newest first: when, who (and role), what, on what."""
    if not actions:
        return empty("No actions recorded yet.", element_id="actions-empty")
    rows = [
        fmt(
            '<tr class="action-row" data-action="{action}"><td>{when}</td><td>{actor}</td>'
            "<td>{role}</td><td>{action}</td><td>{target}</td>"
            '<td class="wrap">{detail}</td></tr>',
            when=format_time(a.created_at),
            actor=a.actor,
            role=a.role,
            action=a.action,
            target=a.target,
            detail=a.detail or "",
        )
        for a in actions
    ]
    headers = [("When", ""), ("Who", ""), ("Role", ""), ("Action", ""), ("On", ""), ("Detail", "")]
    return table(headers, rows, table_id="actions")
