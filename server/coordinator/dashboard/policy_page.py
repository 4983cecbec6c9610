"""The policy page: current version and history for everyone, the editor for admins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.layout import page, section, status_badge, table
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.dashboard.policy_form import (
    FLOAT_FIELDS,
    INT_FIELDS,
    JSON_FIELDS,
    PolicyEdit,
)
from server.coordinator.dashboard.tables import actions_table, policy_table
from server.coordinator.tables import ConsoleAction, Policy, Run

_LABELS = {
    "t_min": "Gavg lower threshold T_min (more bits below it)",
    "t_max": "Gavg upper threshold T_max (blank: 4 x T_min)",
    "bits_min": "Fewest bits per weight",
    "bits_max": "Most bits per weight",
    "bits_init": "Initial bits per weight",
    "check_every": "Controller check every (steps)",
    "rounding": "Rounding of weight updates",
    "adaptive": "Adapt the bits per layer",
    "act_bits": "Activation bits",
    "err_bits": "Error (gradient) bits",
    "overrides": "Per-device-class overrides (JSON)",
    "budgets": "Per-device-class budgets (JSON: memory_bytes, energy_j)",
    "note": "Note: why this change (required)",
}


def _error(name: str, errors: Mapping[str, str]) -> Markup:
    if name not in errors:
        return Markup("")
    return fmt('<p class="field-error" id="{n}-error" role="alert">{e}</p>', n=name, e=errors[name])


def _control(name: str, value: str, errors: Mapping[str, str]) -> Markup:
    invalid = Markup(' aria-invalid="true"') if name in errors else Markup("")
    if name in ("rounding", "adaptive"):
        options = ("nearest", "stochastic") if name == "rounding" else ("true", "false")
        opts = join(
            fmt("<option{s}>{o}</option>", o=o, s=Markup(" selected") if o == value else "")
            for o in options
        )
        return fmt('<select id="{n}" name="{n}"{i}>{o}</select>', n=name, i=invalid, o=opts)
    if name in (*JSON_FIELDS, "note"):
        rows = 2 if name == "note" else 4
        return fmt(
            '<textarea id="{n}" name="{n}" rows="{r}"{i}>{v}</textarea>',
            n=name,
            r=rows,
            i=invalid,
            v=value,
        )
    return fmt(
        '<input id="{n}" name="{n}" value="{v}" inputmode="decimal"{i}>', n=name, v=value, i=invalid
    )


def _field(name: str, value: str, errors: Mapping[str, str]) -> Markup:
    return fmt(
        '<div class="field{cls}"><label for="{n}">{label}</label>{control}{error}</div>',
        cls=" invalid" if name in errors else "",
        n=name,
        label=_LABELS[name],
        control=_control(name, value, errors),
        error=_error(name, errors),
    )


def _diff(edit: PolicyEdit, followers: Sequence[Run], version: int) -> Markup:
    if not edit.changes:
        return fmt(
            '<p id="preview-none" class="muted">Nothing changes against v{v}.</p>', v=version
        )
    rows = [
        fmt(
            '<tr data-field="{f}"><td>{f}</td><td><code>{a}</code></td>'
            "<td><code>{b}</code></td></tr>",
            f=name,
            a=before,
            b=after,
        )
        for name, before, after in edit.changes
    ]
    diff = table(
        [("Field", ""), (f"Now (v{version})", ""), ("After saving", "")],
        rows,
        table_id="preview-diff",
    )
    runs = join(
        fmt(
            '<li><a href="/runs/{id}">Run #{id}</a> {badge} round {r} / {n}</li>',
            id=run.id,
            badge=status_badge(run.status),
            r=run.current_round,
            n=run.rounds,
        )
        for run in followers
    )
    reach = (
        fmt(
            "<p>Active runs that follow the fleet policy and pick v{next} up at their next "
            "round:</p>"
            '<ul id="preview-runs">{runs}</ul>',
            next=version + 1,
            runs=runs,
        )
        if followers
        else Markup(
            '<p id="preview-runs-none" class="muted">No active run follows '
            "the fleet policy: the new version applies to the next runs.</p>"
        )
    )
    return fmt('<div id="preview">{diff}{reach}</div>', diff=diff, reach=reach)


def _editor(viewer: Viewer, edit: PolicyEdit, preview: Markup) -> Markup:
    names = (*FLOAT_FIELDS, *INT_FIELDS, "rounding", "adaptive", *JSON_FIELDS, "note")
    fields = join(_field(n, edit.values.get(n, ""), edit.errors) for n in names)
    summary = Markup("")
    if edit.errors:
        summary = fmt(
            '<p class="error" id="form-errors" role="alert">Not saved: {n} field(s) '
            "need a change (see below).</p>",
            n=len(edit.errors),
        )
    return fmt(
        '<form method="post" action="/policy" id="policy-form" class="console-form" novalidate>'
        '{summary}<input type="hidden" name="csrf_token" value="{csrf}">{fields}{preview}'
        '<div class="buttons"><button type="submit" name="intent" value="preview" '
        'id="policy-preview">Preview the change</button> <button type="submit" name="intent" '
        'value="save" id="policy-save">Save as a new version</button></div></form>',
        summary=summary,
        csrf=viewer.csrf_token,
        fields=fields,
        preview=preview,
    )


def _revert_forms(viewer: Viewer, policies: Sequence[Policy], current: int) -> Markup:
    forms = [
        fmt(
            '<form method="post" action="/policy/revert/{v}" class="inline" id="revert-{v}">'
            '<input type="hidden" name="csrf_token" value="{csrf}">'
            '<button type="submit" id="revert-{v}-submit">Revert to v{v}</button></form>',
            v=p.version,
            csrf=viewer.csrf_token,
        )
        for p in policies
        if p.version != current
    ]
    if not forms:
        return Markup("")
    return fmt(
        '<p class="muted">A revert stores the chosen version\'s values as a new version.</p>'
        '<div class="controls" id="revert-forms">{f}</div>',
        f=join(forms),
    )


def policy_page(
    *,
    viewer: Viewer,
    current: Policy,
    policies: Sequence[Policy],
    count: int,
    actions: Sequence[ConsoleAction],
    edit: PolicyEdit | None = None,
    preview: Markup | None = None,
    notice: str | None = None,
) -> Markup:
    """Current version and history (everyone); editor, preview and reverts (admins only)."""
    admin = viewer.role == "admin" and viewer.csrf_token is not None
    parts = [fmt('<h1 id="policy-title">Fleet precision policy — v{v}</h1>', v=current.version)]
    if notice:
        parts.append(fmt('<p class="notice" id="policy-notice" role="status">{n}</p>', n=notice))
    if admin and edit is not None:
        parts.append(
            section(
                "Edit the policy",
                _editor(viewer, edit, preview or Markup("")),
                section_id="policy-editor",
            )
        )
    else:
        parts.append(
            fmt(
                '<p class="muted" id="policy-read-only">Read-only: only admins change '
                "the policy (you are {role}).</p>",
                role=viewer.role,
            )
        )
    history = policy_table(policies, count=count, used={current.version}, used_label="current")
    if admin:
        history = join([history, _revert_forms(viewer, policies, current.version)])
    parts.append(section("History", history, section_id="policy-section"))
    parts.append(section("Policy changes", actions_table(actions), section_id="actions-section"))
    return page(title="Policy", body=join(parts), viewer=viewer)


def preview_markup(edit: PolicyEdit, followers: Sequence[Run], version: int) -> Markup:
    """The preview section of a valid edit: the changed fields and the runs it reaches."""
    return section("Preview", _diff(edit, followers, version), section_id="policy-preview-section")
