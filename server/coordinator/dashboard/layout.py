"""The page shell of the dashboard (head, top bar, script) and small shared widgets."""

from __future__ import annotations

from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.tables import ACTIVE_RUN_STATUSES, Run

#: The console's sections, in the top bar.
NAV = (
    ("/", "Runs"),
    ("/runs/new", "New run"),
    ("/compare", "Compare"),
    ("/devices", "Fleet"),
    ("/policy", "Policy"),
    ("/actions", "Actions"),
    ("/cost-model", "Cost model"),
)


def _nav() -> Markup:
    links = join(fmt('<a href="{href}">{label}</a>', href=href, label=label) for href, label in NAV)
    return fmt('<nav aria-label="Console">{links}</nav>', links=links)


def page(
    *,
    title: str,
    body: Markup,
    viewer: Viewer | None = None,
    script: bool = False,
) -> Markup:
    """A complete HTML document.

    Parameters
    ----------
    title : str
        Document title (after "aptfleet — ").
    body : Markup
        Content of ``<main>``.
    viewer : Viewer | None (default: None)
        The signed-in token; shows its name and, in a browser session, a sign-out button
        carrying the session's CSRF token.
    script : bool (default: False)
        Load ``/dashboard.js`` (same origin), which polls the small live summary of the
        element carrying ``data-live-url`` (a run) or ``data-overview-url`` (the overview)
        and updates the page in place; no page reloads itself.
    """
    head = Markup("")
    account = Markup("")
    if viewer is not None:
        account = fmt(
            '<span class="muted" id="viewer">Signed in as {name} ({role})</span>',
            name=viewer.name,
            role=viewer.role,
        )
    if viewer is not None and viewer.csrf_token is not None:
        account = fmt(
            '{account}<form method="post" action="/logout" id="logout-form">'
            '<input type="hidden" name="csrf_token" value="{csrf}">'
            '<button type="submit" id="logout-submit">Sign out</button></form>',
            account=account,
            csrf=viewer.csrf_token,
        )
    if script:
        head = Markup('<script src="/dashboard.js" defer></script>')
    return fmt(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">{head}'
        "<title>aptfleet — {title}</title>"
        '<link rel="stylesheet" href="/dashboard.css"></head>'
        '<body><a class="skip" href="#main">Skip to content</a>'
        '<header class="top"><a class="brand" href="/">aptfleet console</a>{nav}'
        '<span class="spacer"></span>{account}</header>'
        '<main id="main" tabindex="-1">{body}</main></body></html>\n',
        head=head,
        title=title,
        nav=_nav() if viewer is not None else Markup(""),
        account=account,
        body=body,
    )


def section(title: str, body: Markup, *, section_id: str) -> Markup:
    """A titled card."""
    return fmt(
        '<section class="card" id="{id}"><h2>{title}</h2>{body}</section>',
        id=section_id,
        title=title,
        body=body,
    )


def empty(message: str, *, element_id: str) -> Markup:
    """The grey italic line shown where there is nothing to show yet."""
    return fmt('<p class="empty" id="{id}">{message}</p>', id=element_id, message=message)


def status_badge(status: str) -> Markup:
    """A coloured pill with the run's status."""
    return fmt('<span class="badge {status}">{status}</span>', status=status)


def run_progress(run: Run) -> Markup:
    """A progress bar and ``current / planned rounds``."""
    done = min(run.current_round, run.rounds)
    return fmt(
        '<progress class="run-progress" value="{done}" max="{total}" '
        'data-run="{id}">{pct}%</progress> <span class="progress-text">{current} / {total}'
        "</span>",
        done=done,
        total=max(run.rounds, 1),
        id=run.id,
        pct=round(100 * done / run.rounds) if run.rounds else 0,
        current=run.current_round,
    )


def is_active(run: Run) -> bool:
    """Whether the run may still change (queued, pending or running): its pages poll it."""
    return run.status in ACTIVE_RUN_STATUSES


def table(headers: list[tuple[str, str]], rows: list[Markup], *, table_id: str) -> Markup:
    """A table; ``headers`` are ``(label, css class)`` pairs, ``rows`` whole ``<tr>`` rows."""
    head = join(
        fmt('<th class="{cls}">{label}</th>', cls=cls, label=label) for label, cls in headers
    )
    return fmt(
        '<table id="{id}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>',
        id=table_id,
        head=head,
        rows=join(rows),
    )
