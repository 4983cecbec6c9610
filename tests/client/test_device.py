"""A device's local data: partitions for any fleet size, cached per process with failures."""

from __future__ import annotations

import pytest

from apt_core import federated as fed
from apt_core.errors import DataError
from client import device
from client.device import DeviceConfig, local_data


def test_local_data_serves_a_device_of_a_10000_device_fleet() -> None:
    # Prepare
    run = fed.RunSettings(task="digits", alpha=0.5, seed=3)

    # Execute
    train, held_out = local_data(run, DeviceConfig(partition_id=9876, num_partitions=10000))

    # Assert
    assert len(train) >= 1
    assert len(train) + len(held_out) <= 2


def test_local_data_caches_the_fleet_partitions_once_per_process() -> None:
    # Prepare
    run = fed.RunSettings(task="digits", alpha=0.5, seed=11)
    device._partitions.cache_clear()

    # Execute: three devices of the same fleet
    for pid in range(3):
        local_data(run, DeviceConfig(partition_id=pid, num_partitions=500))

    # Assert: the fleet was partitioned once
    info = device._partitions.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_local_data_failure_is_cached_and_raised_again() -> None:
    # Prepare: a partition id outside the fleet
    run = fed.RunSettings(task="digits", alpha=0.5, seed=12)
    bad = DeviceConfig(partition_id=7, num_partitions=5)
    device._split.cache_clear()

    # Execute
    with pytest.raises(DataError, match="partition_id=7") as first:
        local_data(run, bad)
    with pytest.raises(DataError, match="partition_id=7") as second:
        local_data(run, bad)

    # Assert: the second round read the failure from the cache, it did not recompute
    info = device._split.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert str(second.value) == str(first.value)
