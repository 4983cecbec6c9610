"""Run control on the console: the start form (the API's schema and messages), stop, resume."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from pydantic import ValidationError

from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.forms import Fields
from server.coordinator.dashboard.layout import page, section
from server.coordinator.dashboard.markup import Markup, fmt, join
from server.coordinator.schemas import Method, PolicyName, RunCreate, Task
from server.coordinator.tables import ACTIVE_RUN_STATUSES, TERMINAL_RUN_STATUSES, Run

#: Runs the API can resume (``services.launcher.resume_run``).
_RESUMABLE = ("interrupted", "stopped", "failed")
_INT_FIELDS = ("clients", "rounds", "seed")
_FLOAT_FIELDS = ("fraction", "alpha")


def _hidden_csrf(viewer: Viewer) -> Markup:
    return fmt('<input type="hidden" name="csrf_token" value="{csrf}">', csrf=viewer.csrf_token)


def _action_form(viewer: Viewer, run: Run, action: str, label: str) -> Markup:
    return fmt(
        '<form method="post" action="/runs/{id}/{action}" class="inline" id="{action}-form">'
        '{csrf}<button type="submit" id="{action}-submit">{label}</button></form>',
        id=run.id,
        action=action,
        csrf=_hidden_csrf(viewer),
        label=label,
    )


def _downloads(run: Run) -> Markup:
    return fmt(
        '<a class="button" id="download-packed" href="/runs/{id}/model?format=packed" '
        "download>Download packed model (.apt)</a> "
        '<a class="button" id="download-float" href="/runs/{id}/model?format=torch" '
        "download>Download float model (.pt)</a>",
        id=run.id,
    )


def run_controls(viewer: Viewer, run: Run, *, has_checkpoint: bool) -> Markup:
    """Stop (queued/pending/running), resume (interrupted/stopped/failed), the downloads."""
    parts: list[Markup] = []
    if viewer.csrf_token is not None and run.status in ACTIVE_RUN_STATUSES:
        parts.append(_action_form(viewer, run, "stop", "Stop run"))
    if viewer.csrf_token is not None and run.status in _RESUMABLE:
        parts.append(_action_form(viewer, run, "resume", "Resume from the last checkpoint"))
    if has_checkpoint and run.status in TERMINAL_RUN_STATUSES:
        parts.append(_downloads(run))
    if not parts:
        return Markup("")
    return fmt('<div class="controls" id="run-controls">{parts}</div>', parts=join(parts))


def run_create_from_form(fields: Fields) -> tuple[RunCreate | None, dict[str, str]]:
    """The ``RunCreate`` of a submitted start form, or the API's error message per field.

    Numbers are converted from text only when they parse; anything else reaches the strict
    schema as text, so the form answers exactly what ``POST /api/v1/runs`` would.
    """
    data: dict[str, Any] = {}
    for name in ("task", "method", "policy", *_INT_FIELDS, *_FLOAT_FIELDS):
        raw = fields.get(name).strip()
        if raw == "":
            continue
        data[name] = _number(raw, int if name in _INT_FIELDS else float, name)
    try:
        return RunCreate.model_validate(data), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "form"
            errors.setdefault(name, f"{error['msg']} (got {error.get('input')!r})")
        return None, errors


def _number(raw: str, kind: type, name: str) -> Any:
    if name not in _INT_FIELDS + _FLOAT_FIELDS:
        return raw
    try:
        return kind(raw)
    except ValueError:
        return raw


def _select(name: str, options: tuple[str, ...], value: str) -> Markup:
    return join(
        fmt(
            '<option value="{o}"{sel}>{label}</option>',
            o=o,
            sel=Markup(" selected") if o == value else "",
            label=o or "fleet policy",
        )
        for o in options
    )


_FIELD_HELP = {
    "task": "Dataset and network the devices train.",
    "method": "apt: adaptive precision; fp32: float baseline; qat8: 8-bit QAT baseline; "
    "fp32-q8: fp32 training, 8-bit weights down and 8-bit updates up.",
    "clients": "Devices the coordinator simulates for the run (1-100).",
    "fraction": "Share of the devices asked to train each round (0 < f <= 1).",
    "rounds": "Federated rounds (1-500).",
    "alpha": "Dirichlet skew of the device partitions; larger is closer to IID.",
    "seed": "Seed of the partitions and the initial model.",
    "policy": "A named policy of its own, or follow the fleet policy and its class overrides.",
}


def _field(name: str, label: str, control: Markup, errors: Mapping[str, str]) -> Markup:
    error = errors.get(name)
    message = Markup("")
    if error:
        message = fmt('<p class="field-error" id="{n}-error">{e}</p>', n=name, e=error)
    return fmt(
        '<div class="field{invalid}"><label for="{n}">{label}</label>{control}'
        '<p class="help" id="{n}-help">{help}</p>{message}</div>',
        invalid=" invalid" if error else "",
        n=name,
        label=label,
        control=control,
        help=_FIELD_HELP[name],
        message=message,
    )


def _input(name: str, value: str, errors: Mapping[str, str], step: str) -> Markup:
    described = f"{name}-help {name}-error" if name in errors else f"{name}-help"
    return fmt(
        '<input id="{n}" name="{n}" value="{v}" inputmode="decimal" data-step="{step}" '
        'aria-describedby="{d}"{invalid}>',
        n=name,
        v=value,
        step=step,
        d=described,
        invalid=Markup(' aria-invalid="true"') if name in errors else "",
    )


def _form_fields(values: Mapping[str, str], errors: Mapping[str, str]) -> Markup:
    defaults = RunCreate.model_fields

    def value(name: str) -> str:
        default = defaults[name].default
        return values.get(name, "" if default is None else str(default))

    selects = [
        ("task", "Task", get_args(Task)),
        ("method", "Method", get_args(Method)),
        ("policy", "Precision policy", ("", *get_args(PolicyName))),
    ]
    parts = [
        _field(
            name,
            label,
            fmt(
                '<select id="{n}" name="{n}">{o}</select>',
                n=name,
                o=_select(name, options, values.get(name, options[0])),
            ),
            errors,
        )
        for name, label, options in selects
    ]
    numbers = [
        ("clients", "Clients"),
        ("fraction", "Fraction per round"),
        ("rounds", "Rounds"),
        ("alpha", "Dirichlet alpha"),
        ("seed", "Seed"),
    ]
    parts += [_field(n, label, _input(n, value(n), errors, "any"), errors) for n, label in numbers]
    return join(parts)


def new_run_page(
    *,
    viewer: Viewer,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> Markup:
    """The start form; after a refused submission, the values and each field's error."""
    errors = errors or {}
    summary = Markup("")
    if errors:
        summary = fmt(
            '<p class="error" id="form-errors" role="alert">The run was not started: '
            "{n} field(s) need a change (see below).</p>",
            n=len(errors),
        )
    form = fmt(
        '<form method="post" action="/runs/new" id="new-run-form" class="console-form" '
        'novalidate>{summary}{csrf}{fields}<button type="submit" id="new-run-submit">'
        "Start run</button></form>",
        summary=summary,
        csrf=_hidden_csrf(viewer),
        fields=_form_fields(values or {}, errors),
    )
    note = Markup(
        '<p class="muted">The same checks and messages as <code>POST /api/v1/runs</code>. '
        "The run joins the admission queue and starts when a slot is free.</p>"
    )
    body = fmt(
        "<h1>Start a run</h1>{section}",
        section=section("New run", join([note, form]), section_id="new-run"),
    )
    return page(title="New run", body=body, viewer=viewer)
