"""Whole dashboard pages: sign-in, errors and the runs overview."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from server.coordinator.crud.tokens import CREATE_COMMAND
from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.layout import (
    REFRESH_S,
    is_active,
    page,
    section,
)
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
    stats = join(
        [
            _stat("active runs", format_number(totals["active_runs"]), "stat-active-runs"),
            _stat("rounds completed", format_number(totals["rounds_completed"]), "stat-rounds"),
            _stat(
                quantity_label("uplink_bytes"),
                format_bytes(totals["uplink_bytes"]),
                "stat-uplink",
            ),
            _stat(
                quantity_label("downlink_bytes"),
                format_bytes(totals["downlink_bytes"]),
                "stat-downlink",
            ),
            _stat(quantity_label("energy"), format_energy(totals["energy_j"]), "stat-energy"),
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
        runs=join(
            [
                section("Runs", shown, section_id="runs-section"),
                section("Latest actions", actions_table(actions), section_id="actions-section"),
            ]
        ),
        policies=section(
            "Policy history",
            policy_table(policies, count=policy_count),
            section_id="policy-section",
        ),
    )
    refresh = REFRESH_S if any(is_active(run) for run in runs) else None
    return page(title="Runs", body=body, viewer=viewer, refresh_s=refresh)
