"""The policy editor's form: text fields to a ``PolicyUpdate``, errors per field, the diff."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from server.coordinator import crud
from server.coordinator.dashboard.forms import Fields
from server.coordinator.exceptions import PolicyUpdateError
from server.coordinator.schemas import PolicyUpdate
from server.coordinator.services.policy import apply_policy_update
from server.coordinator.tables import Policy

FLOAT_FIELDS = ("t_min", "t_max")
INT_FIELDS = ("bits_min", "bits_max", "bits_init", "check_every", "act_bits", "err_bits")
#: Object fields edited as JSON text; ``budgets`` only where the schema has it.
JSON_FIELDS = tuple(name for name in ("overrides", "budgets") if name in PolicyUpdate.model_fields)
POLICY_FIELDS = (*FLOAT_FIELDS, *INT_FIELDS, "rounding", "adaptive")


@dataclass
class PolicyEdit:
    """A submitted edit: the update (when valid), the errors by field, the changes."""

    values: dict[str, str]
    update: PolicyUpdate | None = None
    errors: dict[str, str] = field(default_factory=dict)
    changes: list[tuple[str, str, str]] = field(default_factory=list)


def form_values(row: Policy) -> dict[str, str]:
    """The editor's fields filled with a stored version."""
    values = {name: _text(getattr(row, name)) for name in POLICY_FIELDS}
    for name in JSON_FIELDS:
        values[name] = json.dumps(getattr(row, name, None) or {}, sort_keys=True)
    return values


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(name: str, raw: str) -> Any:
    """Text to the schema's type when it parses; otherwise the text (the schema refuses it)."""
    kinds: dict[str, Any] = {**dict.fromkeys(FLOAT_FIELDS, float), **dict.fromkeys(INT_FIELDS, int)}
    if name in kinds:
        try:
            return kinds[name](raw)
        except ValueError:
            return raw
    if name == "adaptive":
        return {"true": True, "false": False}.get(raw, raw)
    return raw


def _body(fields: Fields, errors: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in POLICY_FIELDS:
        raw = fields.get(name).strip()
        if raw:
            body[name] = _convert(name, raw)
        elif name == "t_max":
            body[name] = None  # the API's rule: a blank t_max is 4 x t_min
    for name in JSON_FIELDS:
        try:
            body[name] = json.loads(fields.get(name).strip() or "{}")
        except json.JSONDecodeError as exc:
            errors[name] = f"Not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
    note = fields.get("note").strip()
    body["note"] = note or None
    return body


def read_policy_edit(fields: Fields, current: Policy, *, need_note: bool) -> PolicyEdit:
    """Validate a submitted edit as ``PUT /api/v1/policy`` would, and diff it with ``current``.

    ``need_note``: saving needs a note (the preview does not).
    """
    edit = PolicyEdit(values={name: fields.get(name) for name in (*POLICY_FIELDS, *JSON_FIELDS)})
    edit.values["note"] = fields.get("note")
    body = _body(fields, edit.errors)
    if need_note and not body["note"]:
        edit.errors["note"] = "Say why the policy changes: the note is required."
    if edit.errors:
        return edit
    try:
        update = PolicyUpdate.model_validate(body)
        policy, overrides = apply_policy_update(
            crud.policy_of(current), current.overrides or {}, update
        )
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "form"
            edit.errors.setdefault(name, f"{error['msg']} (got {error.get('input')!r})")
        return edit
    except PolicyUpdateError as exc:
        edit.errors[exc.loc[0] if exc.loc else "form"] = exc.message
        return edit
    edit.update = update
    edit.changes = _changes(current, policy.to_dict(), overrides, body)
    return edit


def _changes(
    current: Policy, new: Mapping[str, Any], overrides: Mapping[str, Any], body: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """``(field, current, new)`` of every field the edit changes."""
    changed = [
        (name, _text(getattr(current, name)), _text(new[name]))
        for name in POLICY_FIELDS
        if name in new and new[name] != getattr(current, name)
    ]
    after = {"overrides": dict(overrides), "budgets": body.get("budgets")}
    for name in JSON_FIELDS:
        before = getattr(current, name, None) or {}
        if after[name] is not None and after[name] != before:
            changed.append(
                (name, json.dumps(before, sort_keys=True), json.dumps(after[name], sort_keys=True))
            )
    return changed


def revert_update(row: Policy, note: str) -> PolicyUpdate:
    """The update that makes version ``row`` current again, as a new version."""
    body: dict[str, Any] = {name: getattr(row, name) for name in POLICY_FIELDS}
    for name in JSON_FIELDS:
        body[name] = getattr(row, name, None) or {}
    body["note"] = note
    return PolicyUpdate.model_validate(body)
