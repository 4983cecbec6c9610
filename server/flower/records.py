"""Round reports: what the Flower strategy hands its recorder at each round end.

Plain dataclasses, named *Report so they never read as the coordinator's ORM tables
(``Round``, ``ClientRound``, ``LayerPrecision`` in ``server.coordinator.tables``), which
store them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerReport:
    """One layer's precision on one device at the end of one round.

    ``gavg`` and ``underflow`` are the means over the controller checks of the round
    (``checks`` of them); ``bits`` / ``exponent`` are the layer's values at round end.
    """

    layer: str
    bits: int
    exponent: int
    gavg: float
    underflow: float
    checks: int = 0


@dataclass
class ClientReport:
    """One device's part in one round: a trained reply, a rejected reply or a failure.

    ``energy_j`` is the device's modelled energy when its reply was accepted; a rejected
    reply's claim is not trusted and reads 0.
    """

    node_id: int
    device_class: str = "standard"
    partition_id: int | None = None
    policy_version: int | None = None
    energy_j: float = 0.0
    uplink_bytes: int = 0
    downlink_bytes: int = 0
    num_examples: int = 0
    train_loss: float | None = None
    param_bytes: int = 0
    peak_memory_bytes: int = 0
    #: highest weight width the device's class was allowed this round (its effective
    #: ``bits_max``, a budget's cap included); None for float methods
    bits_cap: int | None = None
    rejected: str | None = None  # reason the reply was excluded from aggregation
    failure: str | None = None  # reason the device returned an error / no reply
    layers: list[LayerReport] = field(default_factory=list)


@dataclass
class RoundReport:
    """Everything one finished round produced; stored in a single transaction."""

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
    policy_version: int | None
    clients: list[ClientReport] = field(default_factory=list)
    global_bits: dict[str, int] = field(default_factory=dict)
    packed_model: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the packed model is left out)."""
        d = asdict(self)
        d.pop("packed_model", None)
        return d
