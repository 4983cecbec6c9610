"""Request and response models of the fleet precision policy (``/api/v1/policy``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.coordinator.schema_base import _Page, _Public

#: Documented ranges of the numeric policy fields. Gavg thresholds far outside
#: [T_MIN_LOW, T_MAX_HIGH] mean a layer never or always changes bits; a check every
#: CHECK_EVERY_MAX steps is already longer than any run.
T_MIN_LOW, T_MIN_HIGH = 1e-3, 1e2
T_MAX_LOW, T_MAX_HIGH = 2 * T_MIN_LOW, 4 * T_MIN_HIGH
CHECK_EVERY_MAX = 10_000
BITS_LOW, BITS_HIGH = 2, 16
#: Default of optional, non-nullable update fields: marks "left out" (exclude_unset).
_LEFT_OUT: Any = None


class PolicyPublic(_Public):
    """One version of the fleet precision policy."""

    version: int
    t_min: float
    t_max: float
    bits_min: int
    bits_max: int
    bits_init: int
    check_every: int
    rounding: str
    act_bits: int
    err_bits: int
    adaptive: bool
    overrides: dict[str, dict[str, Any]]
    budgets: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-device-class resource budgets (memory_bytes, energy_j); each "
        "run derives the class's bit cap from them for its model (modelled).",
    )
    author: str
    note: str | None
    created_at: datetime


class PoliciesPublic(_Page):
    """One page of policy versions, newest first."""

    data: list[PolicyPublic]


class BudgetIn(BaseModel):
    """One device class's resource budget (``PUT /api/v1/policy``, ``budgets``)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    memory_bytes: int = Field(
        ge=1, le=2**62, description="Training memory a device of the class can give, in bytes."
    )
    energy_j: float | None = Field(
        default=None, gt=0, description="Energy a device may spend on one local round (J)."
    )


class PolicyUpdate(BaseModel):
    """Body of ``PUT /api/v1/policy``: a full or partial policy.

    Fields left out keep their current value; ``t_max: null`` (or a new ``t_min`` without
    ``t_max``) means ``4 * t_min``; no other policy field may be null. ``overrides``, when
    given, replaces every class override. Strict: ``true`` is not an integer; NaN and
    infinities are refused. Rules across fields (``t_max >= 2 * t_min``,
    ``bits_min <= bits_max``, also against the current values) are checked after the
    schema, with a 422 naming the field.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    t_min: float = Field(default=_LEFT_OUT, ge=T_MIN_LOW, le=T_MIN_HIGH)
    t_max: float | None = Field(default=None, ge=T_MAX_LOW, le=T_MAX_HIGH)
    bits_min: int = Field(default=_LEFT_OUT, ge=BITS_LOW, le=BITS_HIGH)
    bits_max: int = Field(default=_LEFT_OUT, ge=BITS_LOW, le=BITS_HIGH)
    bits_init: int = Field(default=_LEFT_OUT, ge=BITS_LOW, le=BITS_HIGH)
    check_every: int = Field(default=_LEFT_OUT, ge=1, le=CHECK_EVERY_MAX)
    rounding: Literal["nearest", "stochastic"] = Field(default=_LEFT_OUT)
    act_bits: int = Field(default=_LEFT_OUT, ge=BITS_LOW, le=BITS_HIGH)
    err_bits: int = Field(default=_LEFT_OUT, ge=BITS_LOW, le=BITS_HIGH)
    adaptive: bool = Field(default=_LEFT_OUT)
    overrides: dict[str, dict[str, Any]] | None = Field(
        default=None, examples=[{"mcu": {"bits_max": 8}}]
    )
    budgets: dict[str, BudgetIn] | None = Field(
        default=None,
        description="When given, replaces every class budget ({} clears them). A class's "
        "bit cap is the highest width whose modelled training memory (and energy per "
        "round) fits; a budget no width in the class's range fits on a model the "
        "coordinator trains is refused with a 422 naming it.",
        examples=[{"mcu": {"memory_bytes": 150000}, "phone": {"memory_bytes": 165000}}],
    )
    note: str | None = Field(default=None, max_length=2000)
