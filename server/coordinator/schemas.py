"""Request and response models of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from apt_core.config import PolicyError, resolve_policy
from apt_core.federated import RunSettings
from server.flower.settings import ServerSettings

#: The values of ``apt_core.tasks.data.TASK_NAMES`` and ``apt_core.federated.FED_METHODS``
#: (tests/test_architecture.py checks they stay equal).
Task = Literal["digits", "mnist1d"]
Method = Literal["apt", "fp32", "qat8"]
RunStatus = Literal["pending", "running", "completed", "failed", "stopped", "interrupted"]

_INT32_MAX = 2**31 - 1

#: The one definition of a run's defaults: every default below is read from these.
_RUN_DEFAULTS = RunSettings()
_SERVER_DEFAULTS = ServerSettings()


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Message(BaseModel):
    """A plain status or error message."""

    detail: str


class RunCreate(BaseModel):
    """Body of ``POST /api/v1/runs``.

    Defaults come from ``apt_core.federated.RunSettings`` (alpha, seed) and
    ``server.flower.settings.ServerSettings`` (rounds, fraction), the same dataclasses the
    ServerApp, the CLI and pyproject's ``[tool.flwr.app.config]`` take theirs from.
    """

    model_config = ConfigDict(extra="forbid")

    task: Task
    method: Method
    clients: int = Field(default=10, ge=1, le=100,
                         description="Devices the coordinator simulates for the run.")
    fraction: float = Field(default=_SERVER_DEFAULTS.fraction_train, gt=0, le=1)
    rounds: int = Field(default=_SERVER_DEFAULTS.rounds, ge=1, le=500)
    # cast: the default is a skew, never None (IID), which the REST API cannot express
    alpha: float = Field(default=cast(float, _RUN_DEFAULTS.alpha), gt=0, allow_inf_nan=False)
    seed: int = Field(default=_RUN_DEFAULTS.seed, ge=0, le=_INT32_MAX)
    policy: str | None = Field(
        default=None, max_length=200,
        description="The run's own precision policy: a named policy (default, aggressive, "
                    "accurate) or 'key=value,...' changes of the default. Every round of the "
                    "run then trains every device with exactly this policy, recorded as "
                    "policy version 0; fleet policy versions and per-device-class overrides "
                    "(PUT /policy) do not apply to it. Null (the default) follows the fleet: "
                    "each round uses the current version and its overrides.")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                resolve_policy(value)
            except PolicyError as exc:
                raise ValueError(str(exc)) from None
        return value

    def run_settings(self) -> RunSettings:
        """The settings every device of the run shares; the rest take the defaults."""
        return RunSettings(task=self.task, method=self.method, alpha=self.alpha,
                           seed=self.seed)


class RunPublic(_Public):
    """A run as the API shows it."""

    id: int
    task: str
    method: str
    clients: int
    fraction: float
    rounds: int
    alpha: float
    seed: int
    policy: str | None
    status: RunStatus
    flower_run_id: int | None
    current_round: int
    latest_accuracy: float | None
    savings: dict[str, Any] | None = Field(
        description="Savings (fractions, 0.6 = 60% less) of energy, parameter_memory, "
                    "uplink_bytes and downlink_bytes versus fp32 FedAvg on the same "
                    "client-rounds, from the cost model (Horowitz 45 nm); null until the "
                    "run ends.")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> float:
        """Share of the planned rounds that finished, in [0, 1]."""
        return min(1.0, self.current_round / self.rounds) if self.rounds else 0.0


class RunsPublic(BaseModel):
    """One page of runs."""

    data: list[RunPublic]
    count: int


class RoundPublic(_Public):
    """Aggregate outcome of one round."""

    round: int
    accuracy: float | None
    loss: float | None
    energy_j: float
    uplink_bytes: int
    downlink_bytes: int
    participants: int
    failures: int
    rejections: int
    mean_bits: float | None
    policy_version: int | None = Field(
        description="Fleet policy version the round trained with; 0 for a run with its "
                    "own policy.")
    global_bits: dict[str, int]
    created_at: datetime


class ClientRoundPublic(_Public):
    """One device's part in one round: trained, rejected (with the reason) or failed."""

    round: int
    device_id: int
    partition_id: int | None
    policy_version: int | None
    energy_j: float
    uplink_bytes: int
    downlink_bytes: int
    num_examples: int
    train_loss: float | None
    param_bytes: int
    peak_memory_bytes: int
    rejected: str | None
    failure: str | None


class ClientRoundsPublic(BaseModel):
    """Per-device rows of a run, by round."""

    data: list[ClientRoundPublic]
    count: int


class RoundsPublic(BaseModel):
    """Every recorded round of a run, in round order."""

    data: list[RoundPublic]
    count: int


class LayerPrecisionPublic(_Public):
    """One layer on one device at the end of one round."""

    round: int
    device_id: int
    node_id: int
    layer: str
    bits: int
    exponent: int
    gavg: float
    underflow: float
    checks: int


class LayerPrecisionsPublic(BaseModel):
    """One page of per-layer precision rows."""

    data: list[LayerPrecisionPublic]
    count: int


class PrecisionSummaryPublic(_Public):
    """Bits and Gavg of one layer in one round, aggregated over devices."""

    round: int
    layer: str
    devices: int
    min_bits: int
    mean_bits: float
    max_bits: int
    mean_gavg: float


class PrecisionSummariesPublic(BaseModel):
    """Per-layer, per-round summary of a run."""

    data: list[PrecisionSummaryPublic]
    count: int


class DevicePublic(_Public):
    """A Flower node seen by the coordinator."""

    id: int
    node_id: int
    device_class: str
    status: str
    first_seen: datetime
    last_seen: datetime


class DevicesPublic(BaseModel):
    """One page of devices."""

    data: list[DevicePublic]
    count: int


class DeviceRunPublic(_Public):
    """What one device did in one run."""

    run_id: int
    rounds: int
    failures: int
    rejections: int
    first_round: int
    last_round: int
    energy_j: float
    uplink_bytes: int
    downlink_bytes: int
    num_examples: int
    mean_bits: float | None


class DeviceDetailPublic(DevicePublic):
    """A device with its per-run history."""

    history: list[DeviceRunPublic]


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
    author: str
    note: str | None
    created_at: datetime


class PoliciesPublic(BaseModel):
    """Policy versions, newest first."""

    data: list[PolicyPublic]
    count: int


class PolicyUpdate(BaseModel):
    """Body of ``PUT /api/v1/policy``: a full or partial policy.

    Fields left out keep their current value; ``t_max: null`` (or a new ``t_min`` without
    ``t_max``) means ``4 * t_min``. ``overrides``, when given, replaces every class override.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    t_min: float | None = None
    t_max: float | None = None
    bits_min: int | None = None
    bits_max: int | None = None
    bits_init: int | None = None
    check_every: int | None = Field(default=None, le=_INT32_MAX)
    rounding: str | None = None
    act_bits: int | None = None
    err_bits: int | None = None
    adaptive: bool | None = None
    overrides: dict[str, dict[str, Any]] | None = Field(
        default=None, examples=[{"mcu": {"bits_max": 8}}])
    note: str | None = Field(default=None, max_length=2000)
