"""Tests for the federated partitions, from 1 device to more devices than samples."""

import math

import numpy as np
import pytest
import torch

from apt_core.tasks.data import TaskData, load_task
from apt_core.tasks.partition import (
    client_split,
    device_split,
    partition_dirichlet,
    partition_iid,
    partitions,
)

#: Fleet sizes the partitioners must serve on the digits task (1,437 train samples).
FLEET_SIZES = [1, 10, 100, 1000, 1437, 1438, 5000, 10000]


@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_task("digits")


def _index_task(labels: np.ndarray) -> TaskData:
    """A task whose input value is the sample's own index, so splits can be traced back."""
    n = len(labels)
    return TaskData(
        name="index",
        x_train=torch.arange(n, dtype=torch.float32).view(n, 1),
        y_train=torch.as_tensor(labels, dtype=torch.int64),
        x_test=torch.zeros(1, 1),
        y_test=torch.zeros(1, dtype=torch.int64),
        num_classes=int(labels.max()) + 1,
        input_shape=(1,),
    )


def _label_tv_distance(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each partition's and the global label mix."""
    k = int(labels.max()) + 1
    overall = np.bincount(labels, minlength=k) / len(labels)
    return float(
        np.mean(
            [
                0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - overall).sum()
                for p in parts
            ]
        )
    )


def _check_rule(parts: list[np.ndarray], num_samples: int) -> None:
    """The module's rule: every device non-empty, distinct samples, copies as dealt."""
    copies = max(1, math.ceil(len(parts) / num_samples))
    counts = np.bincount(np.concatenate(parts), minlength=num_samples)
    assert min(map(len, parts)) >= 1
    assert all(len(np.unique(p)) == len(p) and np.all(np.diff(p) > 0) for p in parts)
    assert counts.min() >= 1 and counts.max() <= copies
    if copies == 1:
        assert counts.max() == 1  # disjoint and complete


@pytest.mark.parametrize("num_partitions", FLEET_SIZES)
def test_partition_iid_every_device_holds_samples_at_any_fleet_size(
    digits: TaskData, num_partitions: int
) -> None:
    # Execute
    parts = partition_iid(digits.y_train, num_partitions, seed=0)

    # Assert
    assert len(parts) == num_partitions
    _check_rule(parts, len(digits.y_train))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
@pytest.mark.parametrize("num_partitions", FLEET_SIZES)
def test_partition_dirichlet_every_device_holds_samples_at_any_fleet_size(
    digits: TaskData, num_partitions: int, alpha: float
) -> None:
    # Execute
    parts = partition_dirichlet(digits.y_train, num_partitions, alpha=alpha, seed=0)

    # Assert
    assert len(parts) == num_partitions
    _check_rule(parts, len(digits.y_train))


def test_partition_dirichlet_sizes_near_equal(digits: TaskData) -> None:
    # Execute: 1,437 samples over 10 devices is 143 or 144 each
    parts = partition_dirichlet(digits.y_train, 10, alpha=0.1, seed=3)

    # Assert
    assert sorted(set(map(len, parts))) == [143, 144]


def test_partition_iid_positions_never_repeat_a_sample_on_a_device() -> None:
    # Prepare: 25 devices over 10 samples: every sample dealt three times
    labels = np.arange(10)

    # Execute
    parts = partition_iid(labels, 25, seed=0)

    # Assert: 30 slots, none lost to a repeated sample
    assert sum(map(len, parts)) == 30
    assert np.bincount(np.concatenate(parts)).tolist() == [3] * 10


def test_partition_iid_deterministic_for_seed() -> None:
    # Prepare
    labels = torch.arange(100) % 10

    # Execute
    first = partition_iid(labels, 4, seed=1)
    second = partition_iid(labels, 4, seed=1)
    other = partition_iid(labels, 4, seed=2)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("num_partitions", [10, 2000])
def test_partition_dirichlet_deterministic_for_seed(digits: TaskData, num_partitions: int) -> None:
    # Execute
    first = partition_dirichlet(digits.y_train, num_partitions, alpha=0.5, seed=1)
    second = partition_dirichlet(digits.y_train, num_partitions, alpha=0.5, seed=1)
    other = partition_dirichlet(digits.y_train, num_partitions, alpha=0.5, seed=2)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("num_partitions", [0, -1, 2.0, True])
def test_partition_invalid_num_partitions_names_field(num_partitions: object) -> None:
    # Prepare
    labels = np.zeros(100, dtype=np.int64)

    # Execute / Assert
    with pytest.raises(ValueError, match=f"num_partitions={num_partitions}"):
        partition_iid(labels, num_partitions, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"num_partitions={num_partitions}"):
        partition_dirichlet(labels, num_partitions, alpha=0.5, seed=0)  # type: ignore[arg-type]


def test_partition_small_alpha_skews_labels(digits: TaskData) -> None:
    # Prepare
    labels = digits.y_train.numpy()

    # Execute
    skewed = _label_tv_distance(labels, partition_dirichlet(labels, 10, alpha=0.1, seed=0))
    mild = _label_tv_distance(labels, partition_dirichlet(labels, 10, alpha=100.0, seed=0))
    iid = _label_tv_distance(labels, partition_iid(labels, 10, seed=0))

    # Assert
    assert skewed > 0.4
    assert mild < 0.15 and iid < 0.15


def test_partition_dirichlet_skew_holds_at_100_devices(digits: TaskData) -> None:
    # Prepare: 14 samples a device; a uniform mix would put about 1.4 in each class
    labels = digits.y_train.numpy()

    # Execute
    parts = partition_dirichlet(labels, 100, alpha=0.1, seed=0)

    # Assert: most devices see few classes
    classes_per_device = [len(np.unique(labels[p])) for p in parts]
    assert np.median(classes_per_device) <= 3
    assert _label_tv_distance(labels, parts) > 0.5


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_partition_dirichlet_invalid_alpha_names_field(alpha: float) -> None:
    # Prepare
    labels = np.arange(100) % 10

    # Execute / Assert
    with pytest.raises(ValueError, match="alpha="):
        partition_dirichlet(labels, 4, alpha=alpha, seed=0)


def test_partitions_picks_iid_without_alpha() -> None:
    # Prepare
    labels = np.arange(50) % 5

    # Execute
    iid = partitions(labels, 5, None, seed=0)
    skewed = partitions(labels, 5, 0.5, seed=0)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(iid, partition_iid(labels, 5, 0), strict=True))
    expected = partition_dirichlet(labels, 5, 0.5, 0)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, expected, strict=True))


def test_client_split_disjoint_and_complete_across_clients() -> None:
    # Prepare
    task = _index_task(np.arange(500) % 10)

    # Execute
    splits = [client_split(task, pid, 5, alpha=0.3, seed=4) for pid in range(5)]

    # Assert: the input value is the original index, so the union must be every index once
    seen = torch.cat([ds.tensors[0].flatten() for pair in splits for ds in pair])
    torch.testing.assert_close(seen.sort().values, task.x_train.flatten())


def test_client_split_deterministic_and_held_out_fraction(digits: TaskData) -> None:
    # Execute
    train, held_out = client_split(digits, 2, 4, alpha=None, seed=0, test_fraction=0.25)
    train_again, held_out_again = client_split(digits, 2, 4, alpha=None, seed=0, test_fraction=0.25)

    # Assert
    torch.testing.assert_close(train.tensors[0], train_again.tensors[0])
    torch.testing.assert_close(held_out.tensors[1], held_out_again.tensors[1])
    total = len(train) + len(held_out)
    assert total in (359, 360)
    assert len(held_out) == round(total * 0.25)
    assert train.tensors[0].shape[1:] == (1, 8, 8)


def test_client_split_one_sample_device_trains_on_it(digits: TaskData) -> None:
    # Execute: 10,000 devices on 1,437 samples hold one sample each
    train, held_out = client_split(digits, 9999, 10000, alpha=0.5, seed=0)

    # Assert
    assert len(train) == 1
    assert len(held_out) == 0


@pytest.mark.parametrize("partition_id", [-1, 4])
def test_client_split_invalid_partition_id_names_field(digits: TaskData, partition_id: int) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=f"partition_id={partition_id}"):
        client_split(digits, partition_id, 4, alpha=None, seed=0)


def test_device_split_invalid_test_fraction_names_field(digits: TaskData) -> None:
    # Prepare
    parts = partition_iid(digits.y_train, 4, seed=0)

    # Execute / Assert
    with pytest.raises(ValueError, match="test_fraction=1.0"):
        device_split(digits, parts, 0, seed=0, test_fraction=1.0)
