"""Precision-policy rules: per-device-class overrides and validated policy updates."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from apt_core import federated as fed
from apt_core.config import PolicyError, PrecisionPolicy
from apt_core.federated import Overrides
from apt_core.federated.device_class import DEVICE_CLASS_PATTERN as _DEVICE_CLASS
from server.coordinator.exceptions import PolicyUpdateError
from server.coordinator.schemas import PolicyUpdate

_FIELD_IN_MESSAGE = re.compile(r"field '([^']+)'")


def _field_of(exc: PolicyError) -> str | None:
    match = _FIELD_IN_MESSAGE.search(str(exc))
    return match.group(1) if match else None


def effective_policy(
    policy: PrecisionPolicy, overrides: Mapping[str, Mapping[str, Any]], device_class: str
) -> PrecisionPolicy:
    """The policy a device of ``device_class`` trains with.

    Parameters
    ----------
    policy : PrecisionPolicy
        The fleet-wide policy.
    overrides : Mapping[str, Mapping[str, Any]]
        Per-class field changes, e.g. ``{"mcu": {"bits_max": 8}}``.
    device_class : str
        Class of the device; a class without an override gets ``policy`` unchanged.

    Returns
    -------
    PrecisionPolicy
        ``policy`` with the class's fields replaced and re-validated.

    Raises
    ------
    PolicyError
        If the override names an unknown field or yields an invalid policy.
    """
    return fed.effective_policy(policy, overrides, device_class)


def validate_overrides(policy: PrecisionPolicy, overrides: Mapping[str, Any]) -> Overrides:
    """Check every class override against ``policy``; raise ``PolicyUpdateError`` naming it."""
    checked: Overrides = {}
    for device_class, changes in overrides.items():
        if not _DEVICE_CLASS.match(device_class):
            raise PolicyUpdateError(
                ("overrides", device_class),
                f"Device class {device_class!r} must be 1-32 letters, digits, '_', '.' or '-'.",
                device_class,
            )
        if not isinstance(changes, Mapping):
            raise PolicyUpdateError(
                ("overrides", device_class),
                f"The override of device class '{device_class}' must be an "
                "object of policy fields.",
                changes,
            )
        try:
            effective_policy(policy, {device_class: changes}, device_class)
        except PolicyError as exc:
            name = _field_of(exc)
            if name not in changes and len(changes) == 1:
                # e.g. base bits_min > the override's bits_max: blame what the override set
                name = next(iter(changes))
            loc = ("overrides", device_class) + ((name,) if name else ())
            raise PolicyUpdateError(loc, str(exc), changes.get(name) if name else None) from None
        checked[device_class] = dict(changes)
    return checked


def apply_policy_update(
    current: PrecisionPolicy, current_overrides: Mapping[str, Any], update: PolicyUpdate
) -> tuple[PrecisionPolicy, Overrides]:
    """The policy and overrides that ``update`` produces from the current ones.

    Raises
    ------
    PolicyUpdateError
        Naming the first invalid field, e.g. ``loc=("t_max",)`` when ``t_max < 2 * t_min``.
    """
    changes = update.model_dump(exclude_unset=True, exclude={"overrides", "budgets", "note"})
    try:
        policy = current.with_(**changes)
    except PolicyError as exc:
        name = _field_of(exc)
        raise PolicyUpdateError(
            (name,) if name else (), str(exc), changes.get(name) if name else None
        ) from None
    overrides = update.overrides if update.overrides is not None else current_overrides
    return policy, validate_overrides(policy, overrides)
