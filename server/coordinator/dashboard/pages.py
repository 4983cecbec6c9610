"""Whole dashboard pages: sign-in, errors, the runs overview and its live summary, actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from server.coordinator.core.pagination import Page
from server.coordinator.crud.tokens import CREATE_COMMAND
from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.layout import empty, is_active, page, section
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.dashboard.quantities import quantity_label
from server.coordinator.dashboard.tables import (
    actions_table,
    policy_table,
    runs_table,
)
from server.coordinator.dashboard.units import (
    format_bytes,
    format_energy,
    format_number,
    format_percent,
    format_time,
)
from server.coordinator.tables import ConsoleAction, Policy, Run


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


def _stat(label: str | Markup, value: str, stat_id: str) -> Markup:
    return fmt(
        '<div class="stat" id="{id}"><div class="value">{value}</div>'
        '<div class="label">{label}</div></div>',
        id=stat_id,
        value=value,
        label=label,
    )


#: The overview's totals: (element id, ``crud.fleet_totals`` key, formatter, label key).
_STATS = (
    ("stat-active-runs", "active_runs", format_number, None),
    ("stat-rounds", "rounds_completed", format_number, None),
    ("stat-uplink", "uplink_bytes", format_bytes, "uplink_bytes"),
    ("stat-downlink", "downlink_bytes", format_bytes, "downlink_bytes"),
    ("stat-energy", "energy_j", format_energy, "energy"),
)
_STAT_LABELS = {"active_runs": "active runs", "rounds_completed": "rounds completed"}


def _stats(totals: Mapping[str, float]) -> Markup:
    return join(
        _stat(
            quantity_label(label) if label else _STAT_LABELS[key],
            formatter(totals[key]),
            stat_id,
        )
        for stat_id, key, formatter, label in _STATS
    )


def overview_summary(
    *, runs: Sequence[Run], count: int, totals: Mapping[str, float]
) -> dict[str, Any]:
    """What the overview's script updates in place, as the page itself writes it.

    ``stats`` maps each total's element id to its text; ``runs`` holds the state, progress
    and text cells of the runs asked for; ``count`` is how many runs exist (more than the
    page shows means new runs). Its size follows the runs asked for, not their rounds.
    """
    return {
        "count": count,
        "stats": {stat_id: formatter(totals[key]) for stat_id, key, formatter, _ in _STATS},
        "runs": [
            {
                "id": run.id,
                "status": run.status,
                "current_round": run.current_round,
                "rounds": run.rounds,
                "accuracy": format_percent(run.latest_accuracy),
                "finished": format_time(run.finished_at),
            }
            for run in runs
        ],
    }


def _overview_notice() -> Markup:
    return Markup(
        '<p class="notice" id="overview-notice" role="status" hidden>'
        '<span id="overview-notice-text"></span> <a href="/">Reload the list</a></p>'
    )


def overview_page(
    *,
    viewer: Viewer,
    runs: Sequence[Run],
    count: int,
    totals: Mapping[str, float],
    policies: Sequence[Policy],
    policy_count: int,
    actions: Sequence[ConsoleAction] = (),
) -> Markup:
    """Fleet totals, the newest runs, the latest actions (console or API) and the policy history."""
    stats = _stats(totals)
    shown = runs_table(runs)
    if count > len(runs):
        shown = fmt(
            '{table}<p class="muted">Showing the {n} newest of {count} runs.</p>',
            table=shown,
            n=len(runs),
            count=count,
        )
    body = fmt(
        '<h1>Runs</h1><div id="overview-live" data-overview-url="/overview/live" '
        'data-count="{count}">{notice}<div class="stats">{stats}</div>{runs}</div>{policies}',
        count=count,
        notice=_overview_notice(),
        stats=stats,
        runs=join(
            [
                section("Runs", shown, section_id="runs-section"),
                section(
                    "Latest actions",
                    fmt(
                        '{table}<p><a href="/actions" id="every-action-link">Every action</a></p>',
                        table=actions_table(actions),
                    ),
                    section_id="actions-section",
                ),
            ]
        ),
        policies=section(
            "Policy history",
            policy_table(policies, count=policy_count),
            section_id="policy-section",
        ),
    )
    # While a shown run may change, /dashboard.js polls /overview/live and updates the
    # totals and those runs' cells in place (no reload); it stops once none is active.
    active = any(is_active(run) for run in runs)
    return page(title="Runs", body=body, viewer=viewer, script=active)


def actions_page(*, viewer: Viewer, actions: Page[ConsoleAction], first: bool) -> Markup:
    """Every action (console or API) with who took it, newest first, one key page at a time."""
    links = []
    if actions.next_cursor:
        links.append(
            fmt(
                '<a id="actions-next" href="/actions?{q}">Next page (older actions)</a>',
                q=urlencode({"cursor": actions.next_cursor}),
            )
        )
    if not first:
        links.append(Markup('<a id="actions-first" href="/actions">First page</a>'))
    shown = (
        actions_table(actions.data)
        if actions.data
        else empty("No actions on this page.", element_id="actions-page-empty")
    )
    body = fmt(
        '<h1>Actions</h1><p class="muted" id="actions-count">{count} action(s) recorded, from '
        "the console and the API, each with the token's name and role; newest first.</p>"
        "{table}<p>{links}</p>",
        count=actions.count,
        table=shown,
        links=join(links, Markup(" &middot; ")),
    )
    return page(
        title="Actions", body=section("Actions", body, section_id="all-actions"), viewer=viewer
    )
