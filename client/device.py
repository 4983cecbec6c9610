"""One device as the ClientApp sees it: node config, local data and remembered bits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from flwr.app import ConfigRecord, Context
from torch import nn
from torch.utils.data import TensorDataset

from apt_core.conversion import apt_layers
from apt_core.federated import RunSettings
from apt_core.federated import record_keys as keys
from apt_core.federated.device_class import (
    DEFAULT_DEVICE_CLASS,
    DEVICE_CLASS_PATTERN,
    DEVICE_CLASS_RULE,
)
from apt_core.tasks.data import TaskData, client_split, load_task


class SimulatedFailure(RuntimeError):
    """Raised by the ``fail-at-round`` test hook."""


@dataclass(frozen=True)
class DeviceConfig:
    """What a device's node config says about it.

    Parameters
    ----------
    partition_id : int
    num_partitions : int
    device_class : str (default: "standard")
        Picks the per-class policy override; see :data:`DEVICE_CLASS_RULE`.
    fail_at_round : int | None (default: None)
        Test hook: train raises :class:`SimulatedFailure` at this server round.
    """

    partition_id: int
    num_partitions: int
    device_class: str = DEFAULT_DEVICE_CLASS
    fail_at_round: int | None = None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> DeviceConfig:
        """Parse ``context.node_config``."""
        for key in (keys.PARTITION_ID, keys.NUM_PARTITIONS):
            if key not in node_config:
                raise ValueError(
                    f"Node config lacks '{key}'; start the SuperNode with "
                    f'--node-config "{keys.PARTITION_ID}=I '
                    f'{keys.NUM_PARTITIONS}=N".'
                )
        pid = int(node_config[keys.PARTITION_ID])
        device_class = str(node_config.get(keys.DEVICE_CLASS, DEFAULT_DEVICE_CLASS))
        if not DEVICE_CLASS_PATTERN.match(device_class):
            raise ValueError(
                f"Node config '{keys.DEVICE_CLASS}' = {device_class!r} must be {DEVICE_CLASS_RULE}."
            )
        fail = node_config.get(keys.FAIL_AT_ROUND)
        return cls(
            pid,
            int(node_config[keys.NUM_PARTITIONS]),
            device_class,
            None if fail is None else int(fail),
        )

    def maybe_fail(self, server_round: int) -> None:
        """The test hook: raise when this is the configured failing round."""
        if self.fail_at_round is not None and server_round == self.fail_at_round:
            raise SimulatedFailure(
                f"Device {self.partition_id} failed on purpose at round "
                f"{server_round} (node config {keys.FAIL_AT_ROUND}="
                f"{self.fail_at_round})."
            )


@lru_cache(maxsize=4)
def _task(task: str) -> TaskData:
    return load_task(task)


@lru_cache(maxsize=64)
def _split(
    task: str, partition_id: int, num_partitions: int, alpha: float | None, seed: int
) -> tuple[TensorDataset, TensorDataset]:
    return client_split(_task(task), partition_id, num_partitions, alpha, seed)


def local_data(run: RunSettings, device: DeviceConfig) -> tuple[TensorDataset, TensorDataset]:
    """The device's (train, held-out) partition; cached per process."""
    return _split(run.task, device.partition_id, device.num_partitions, run.alpha, run.seed)


def remembered_bits(context: Context, model: nn.Module) -> dict[str, int] | None:
    """Per-layer bits this device ended its last round with (None if none fit ``model``)."""
    if keys.STATE_DEVICE_BITS not in context.state:
        return None
    bits = context.state.config_records[keys.STATE_DEVICE_BITS].get(keys.LAYER_BITS, [])
    if not isinstance(bits, list):
        return None
    names = list(apt_layers(model))
    if not names or len(bits) != len(names):
        return None
    return {n: int(cast(int, b)) for n, b in zip(names, bits, strict=True)}


def remember_bits(context: Context, bits: Mapping[str, int]) -> None:
    """Keep the round's final bits (apt_layers order) in the node state."""
    if bits:
        context.state[keys.STATE_DEVICE_BITS] = ConfigRecord(
            {keys.LAYER_BITS: [int(b) for b in bits.values()]}
        )
