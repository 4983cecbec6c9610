"""One device as the ClientApp sees it: node config, local data and remembered bits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Context
from torch import nn
from torch.utils.data import TensorDataset

from apt_core.conversion import apt_layers
from apt_core.errors import DataError
from apt_core.federated import RunSettings
from apt_core.federated import record_keys as keys
from apt_core.federated.device_class import (
    DEFAULT_DEVICE_CLASS,
    DEVICE_CLASS_PATTERN,
    DEVICE_CLASS_RULE,
)
from apt_core.tasks.data import TaskData, load_task
from apt_core.tasks.partition import device_split, partitions

#: Device splits kept per process: a simulation process serves many devices (a few KB each).
_SPLIT_CACHE_SIZE = 16384


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


@lru_cache(maxsize=8)
def _partitions(
    task: str, num_partitions: int, alpha: float | None, seed: int
) -> list[np.ndarray] | DataError:
    """The whole fleet's partitions, computed once per process (or the reason they fail)."""
    try:
        return partitions(_task(task).y_train, num_partitions, alpha, seed)
    except DataError as err:
        return err


@lru_cache(maxsize=_SPLIT_CACHE_SIZE)
def _split(
    task: str, partition_id: int, num_partitions: int, alpha: float | None, seed: int
) -> tuple[TensorDataset, TensorDataset] | DataError:
    """One device's split, or the reason it fails: a failure is cached like a success."""
    parts = _partitions(task, num_partitions, alpha, seed)
    if isinstance(parts, DataError):
        return parts
    try:
        return device_split(_task(task), parts, partition_id, seed)
    except DataError as err:
        return err


def local_data(run: RunSettings, device: DeviceConfig) -> tuple[TensorDataset, TensorDataset]:
    """The device's (train, held-out) partition; cached per process, failures included.

    Raises
    ------
    DataError
        The partition's failure, raised again from the cache on every later round.
    """
    split = _split(run.task, device.partition_id, device.num_partitions, run.alpha, run.seed)
    if isinstance(split, DataError):
        # a fresh error each round: raising the cached one would grow its traceback
        raise DataError(str(split))
    return split


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
