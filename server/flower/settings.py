"""The ServerApp's settings and its run_config, derived from the dataclass defaults (no flwr).

:class:`apt_core.federated.RunSettings` (what every device shares) and
:class:`ServerSettings` (the server's round loop) are the one definition of a run's
settings and their defaults. The ServerApp's run_config, ``[tool.flwr.app.config]`` in
pyproject.toml (checked equal by tests/test_architecture.py), the coordinator's REST schema
and the CLI all take their defaults from them. This module imports no flwr, so the
coordinator's schemas can read the defaults without loading the Flower app.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apt_core.federated import RunSettings

#: run_config keys of the ServerApp itself (beyond the run settings and the round loop):
#: the named policy served without a coordinator, the JSONL output directory, and the
#: coordinator's database and run id (both set only when the coordinator submits a run).
APP_CONFIG_DEFAULTS: dict[str, Any] = {
    "policy": "default",
    "out-dir": "",
    "db-url": "",
    "coordinator-run-id": 0,
}


#: ``ServerSettings.sampling`` values: "seeded" (:mod:`server.flower.sampling`) or "random"
#: (Flower's FedAvg: node ids drawn with the unseeded ``random`` module, no query)
SAMPLINGS = ("seeded", "random")


@dataclass(frozen=True)
class ServerSettings:
    """What the ServerApp needs besides the policy seam.

    Parameters
    ----------
    run : RunSettings (default: RunSettings())
        Shared with the devices each round.
    rounds : int (default: 3)
        Planned rounds of the run (``num-server-rounds``).
    fraction_train : float (default: 1.0)
        FedAvg's share of connected devices sampled for training.
    fraction_evaluate : float (default: 0.0)
        FedAvg's share sampled for federated evaluation (0.0: central evaluation only).
    min_nodes : int (default: 2)
        Devices that must be connected before round 1 (and sampled at least).
    timeout : float (default: 600.0)
        Seconds to wait for the replies of one round (``round-timeout``).
    start_round : int (default: 0)
        Rounds already recorded (a resumed run): training continues with round
        ``start_round + 1`` and records carry the continued numbering.
    checkpoint : bytes | None (default: None)
        Global model to start from (the stored checkpoint of round ``start_round``).
    max_failure_share : float (default: 0.5)
        The run fails when more than this share of its sampled replies failed or were
        rejected (``max-failure-share``); a round with no aggregated reply fails it at
        once. See :mod:`server.flower.run_health`.
    sampling : str (default: "seeded")
        How each round's devices are drawn (``sampling``): "seeded" by partition id with
        the run seed and round, so a seed trains the same devices in every run (each node
        is asked its partition once, :mod:`server.flower.sampling`); "random" as Flower's
        FedAvg does (no query, not reproducible).
    """

    run: RunSettings = field(default_factory=RunSettings)
    rounds: int = 3
    fraction_train: float = 1.0
    fraction_evaluate: float = 0.0
    min_nodes: int = 2
    timeout: float = 600.0
    start_round: int = 0
    checkpoint: bytes | None = None
    max_failure_share: float = 0.5
    sampling: str = "seeded"

    def __post_init__(self) -> None:
        """Reject an unknown sampling mode by name."""
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling={self.sampling!r} is not one of {SAMPLINGS}.")

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ServerSettings:
        """Read run_config; an absent key takes the dataclass default."""
        c = {**RUN_CONFIG_DEFAULTS, **dict(run_config)}
        return cls(
            run=RunSettings.from_config(c),
            rounds=int(c["num-server-rounds"]),
            fraction_train=float(c["fraction-train"]),
            fraction_evaluate=float(c["fraction-evaluate"]),
            min_nodes=int(c["min-nodes"]),
            timeout=float(c["round-timeout"]),
            max_failure_share=float(c["max-failure-share"]),
            sampling=str(c["sampling"]),
        )

    def to_run_config(self) -> dict[str, Any]:
        """The run_config entries that :meth:`from_run_config` reads back into ``self``."""
        return {
            **self.run.to_config(),
            "num-server-rounds": self.rounds,
            "fraction-train": float(self.fraction_train),
            "fraction-evaluate": float(self.fraction_evaluate),
            "min-nodes": self.min_nodes,
            "round-timeout": float(self.timeout),
            "max-failure-share": float(self.max_failure_share),
            "sampling": self.sampling,
        }


#: Every key the ServerApp reads from run_config, with the value used when it is absent.
RUN_CONFIG_DEFAULTS: dict[str, Any] = {**ServerSettings().to_run_config(), **APP_CONFIG_DEFAULTS}
