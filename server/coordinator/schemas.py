"""Request and response models of the REST API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, computed_field

from apt_core.federated import RunSettings
from server.coordinator.policy_schemas import (  # noqa: F401 - the policy's models, re-exported
    BudgetIn,
    PoliciesPublic,
    PolicyPublic,
    PolicyUpdate,
)
from server.coordinator.schema_base import _Page, _Public
from server.flower.settings import ServerSettings

#: The values of ``apt_core.tasks.data.TASK_NAMES`` and ``apt_core.federated.FED_METHODS``
#: (tests/test_architecture.py checks they stay equal).
Task = Literal["digits", "mnist1d"]
Method = Literal["apt", "fp32", "qat8", "fp32-q8"]
#: The keys of ``apt_core.config.NAMED_POLICIES``, the policies a run may have of its own.
PolicyName = Literal["default", "aggressive", "accurate", "nearest", "stochastic"]
RunStatus = Literal["queued", "pending", "running", "completed", "failed", "stopped", "interrupted"]

_INT32_MAX = 2**31 - 1

#: A Dirichlet alpha of ALPHA_MAX is as good as IID (run settings accept no IID switch over
#: REST). The policy fields' ranges live with the policy's models (policy_schemas.py).
ALPHA_MAX = 1e3

#: The one definition of a run's defaults: every default below is read from these.
_RUN_DEFAULTS = RunSettings()
_SERVER_DEFAULTS = ServerSettings()


#: Most devices one run may have (``clients``): what one coordinator stores and serves per
#: round within its targets (docs/results/store-scale.md); the deployment engine carries it.
CLIENTS_MAX = 1000


class Message(BaseModel):
    """A plain status or error message."""

    detail: str


class RunCreate(BaseModel):
    """Body of ``POST /api/v1/runs``.

    Defaults come from ``apt_core.federated.RunSettings`` (alpha, seed) and
    ``server.flower.settings.ServerSettings`` (rounds, fraction), the same dataclasses the
    ServerApp, the CLI and pyproject's ``[tool.flwr.app.config]`` take theirs from.
    Strict: ``true`` is not an integer and ``"3"`` is not a number; NaN and infinities
    are refused.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    task: Task
    method: Method
    clients: int = Field(
        default=10,
        ge=1,
        le=CLIENTS_MAX,
        description="Devices the coordinator simulates for the run.",
    )
    fraction: float = Field(default=_SERVER_DEFAULTS.fraction_train, gt=0, le=1)
    rounds: int = Field(default=_SERVER_DEFAULTS.rounds, ge=1, le=500)
    # cast: the default is a skew, never None (IID), which the REST API cannot express
    alpha: float = Field(
        default=cast(float, _RUN_DEFAULTS.alpha),
        gt=0,
        le=ALPHA_MAX,
        allow_inf_nan=False,
        description="Dirichlet skew of the device partitions; larger is closer to IID.",
    )
    seed: int = Field(default=_RUN_DEFAULTS.seed, ge=0, le=_INT32_MAX)
    policy: PolicyName | None = Field(
        default=None,
        description="The run's own precision policy, one of the named policies (the "
        "REST API takes no 'key=value' changes: JSON Schema cannot state their "
        "rules). Every round of the run then trains every device with exactly "
        "this policy, recorded as "
        "policy version 0; fleet policy versions and per-device-class overrides "
        "(PUT /policy) do not apply to it. Null (the default) follows the fleet: "
        "each round uses the current version and its overrides.",
    )

    def run_settings(self) -> RunSettings:
        """The settings every device of the run shares; the rest take the defaults."""
        return RunSettings(task=self.task, method=self.method, alpha=self.alpha, seed=self.seed)


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
        "run ends."
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = Field(
        default=None,
        description="Place in the admission queue while the run is queued "
        "(1 starts next); null otherwise. At most "
        "APTFLEET_MAX_ACTIVE_RUNS runs are pending or running.",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> float:
        """Share of the planned rounds that finished, in [0, 1]."""
        return min(1.0, self.current_round / self.rounds) if self.rounds else 0.0


class RunsPublic(_Page):
    """One page of runs."""

    data: list[RunPublic]


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
        description="Fleet policy version the round trained with; 0 for a run with its own policy."
    )
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
    bits_cap: int | None = Field(
        default=None,
        description="Highest weight width the device's class was sent this round (its "
        "override's or a budget's cap, else the fleet bits_max); null for float methods.",
    )
    rejected: str | None
    failure: str | None


class ClientRoundsPublic(_Page):
    """One page of a run's per-device rows, by round and device id."""

    data: list[ClientRoundPublic]


class RoundsPublic(_Page):
    """One page of a run's recorded rounds, in round order."""

    data: list[RoundPublic]


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


class LayerPrecisionsPublic(_Page):
    """One page of per-layer precision rows."""

    data: list[LayerPrecisionPublic]


class PrecisionSummaryPublic(_Public):
    """Bits and Gavg of one layer in one round, aggregated over devices."""

    round: int
    layer: str
    devices: int
    min_bits: int
    mean_bits: float
    max_bits: int
    mean_gavg: float


class PrecisionSummariesPublic(_Page):
    """One page of a run's per-round, per-layer summary, by round and layer."""

    data: list[PrecisionSummaryPublic]


class RunSummaryPublic(BaseModel):
    """What a live view polls: a run's state, totals and latest round, cheap at any size.

    Totals are sums over the run's rounds (modelled energy, bytes on the wire, device
    replies), read from one row per round.
    """

    id: int
    status: RunStatus
    rounds: int
    current_round: int
    progress: float
    latest_accuracy: float | None
    queue_position: int | None
    finished_at: datetime | None
    rounds_recorded: int
    energy_j: float
    uplink_bytes: int
    downlink_bytes: int
    participants: int
    failures: int
    rejections: int
    latest_round: RoundPublic | None


class DevicePublic(_Public):
    """A Flower node seen by the coordinator."""

    id: int
    node_id: int
    device_class: str
    status: str
    first_seen: datetime
    last_seen: datetime


class DevicesPublic(_Page):
    """One page of devices."""

    data: list[DevicePublic]


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


TokenStatus = Literal["active", "revoked", "expired"]


class TokenPublic(_Public):
    """An API token as an admin sees it: never its secret, nor the secret's digest."""

    id: int
    name: str
    role: Literal["admin", "operator"]
    created_at: datetime
    expires_at: datetime | None = Field(description="None: the token never expires.")
    last_used_at: datetime | None = Field(
        description="Last authenticated use, recorded at most once a minute per token."
    )
    revoked: bool
    revoked_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> TokenStatus:
        """``revoked``, ``expired`` or ``active``: whether the token still authenticates."""
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            return "expired"
        return "active"


class TokensPublic(_Page):
    """One page of API tokens, oldest first."""

    data: list[TokenPublic]
