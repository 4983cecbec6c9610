"""Device-class resource budgets: validated on every policy update against the models runs use.

A class's bit cap depends on the run's model and workload, so an update is checked against
every model a coordinator run can train (each REST task with the default architecture)
at the default run settings: a budget that no width of the class's range fits on one of
them is refused, naming the class, the field and the value (HTTP 422). Each run then
derives its own caps at every round start (``server.flower.budgets.BudgetCapper``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

from apt_core.config import PrecisionPolicy
from apt_core.errors import BudgetError
from apt_core.federated import RunSettings
from apt_core.federated.budget import Budget
from apt_core.federated.device_class import DEVICE_CLASS_PATTERN, DEVICE_CLASS_RULE
from server.coordinator.exceptions import PolicyUpdateError
from server.coordinator.schemas import PolicyUpdate, RunCreate, Task
from server.flower.budgets import BudgetCapper

_FIELD_IN_MESSAGE = re.compile(r"field '([^']+)'")

Budgets = dict[str, dict[str, Any]]


def _error(device_class: str, exc: BudgetError, budget: Mapping[str, Any]) -> PolicyUpdateError:
    match = _FIELD_IN_MESSAGE.search(str(exc))
    name = match.group(1) if match else None
    loc = ("budgets", device_class) + ((name,) if name else ())
    return PolicyUpdateError(loc, str(exc), budget.get(name) if name else None)


def reference_cappers() -> list[BudgetCapper]:
    """One capper per model a coordinator run can train, at the default run settings."""
    clients = int(RunCreate.model_fields["clients"].default)
    return [BudgetCapper.for_run(RunSettings(task=task), clients) for task in get_args(Task)]


def validate_budgets(
    policy: PrecisionPolicy, overrides: Mapping[str, Mapping[str, Any]], budgets: Budgets
) -> Budgets:
    """Check each class budget; the checked budgets as they are stored.

    Raises
    ------
    PolicyUpdateError
        ``loc = ("budgets", <class>[, <field>])`` for a bad class name, a bad field, or a
        budget no width of the class's range fits on one of the reference models.
    """
    for device_class, values in budgets.items():
        if not DEVICE_CLASS_PATTERN.match(device_class):
            raise PolicyUpdateError(
                ("budgets", device_class),
                f"Device class {device_class!r} must be {DEVICE_CLASS_RULE}.",
                device_class,
            )
        try:
            budget = Budget.from_dict(values)
            for capper in reference_cappers():
                try:
                    capper.caps(policy, overrides, {device_class: budget})
                except BudgetError as exc:
                    raise BudgetError(f"On {capper.task}/{capper.arch}: {exc}") from None
        except BudgetError as exc:
            raise _error(device_class, exc, values) from None
    return {c: Budget.from_dict(v).to_dict() for c, v in budgets.items()}


def apply_budget_update(
    policy: PrecisionPolicy,
    overrides: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
    update: PolicyUpdate,
) -> Budgets:
    """The budgets ``update`` leaves, checked against the new policy and overrides.

    Budgets the update does not touch are checked again too: a higher ``bits_min`` can
    make a stored budget unmeetable.
    """
    if update.budgets is not None:
        raw = {c: b.model_dump(exclude_none=True) for c, b in update.budgets.items()}
    else:
        raw = {c: dict(v) for c, v in current.items()}
    return validate_budgets(policy, overrides, raw)
