"""Tests for the offline datasets and federated partitioning."""

import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from apt_core.tasks.data import (
    TASK_NAMES,
    TaskData,
    client_split,
    load_task,
    make_loader,
    partition_dirichlet,
    partition_iid,
)


@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_task("digits")


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("aptfleet-data")


@pytest.fixture(scope="module")
def mnist1d_task(mnist1d_cache) -> TaskData:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APTFLEET_DATA_DIR", str(mnist1d_cache))
        return load_task("mnist1d")


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


def test_load_task_digits_shapes_and_dtypes(digits: TaskData) -> None:
    # Prepare / Execute: the fixture loads the task

    # Assert
    assert digits.name == "digits"
    assert digits.x_train.shape == (1437, 1, 8, 8)
    assert digits.x_test.shape == (360, 1, 8, 8)
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.x_train.dtype == torch.float32
    assert digits.y_train.dtype == torch.int64 and digits.y_test.dtype == torch.int64
    assert abs(digits.x_train.mean().item()) < 1e-4
    assert abs(digits.x_train.std().item() - 1.0) < 1e-2


def test_load_task_digits_split_stratified(digits: TaskData) -> None:
    # Execute
    train_counts = torch.bincount(digits.y_train, minlength=10).float()
    test_counts = torch.bincount(digits.y_test, minlength=10).float()

    # Assert
    share = test_counts / (train_counts + test_counts)
    assert torch.all((share > 0.17) & (share < 0.23))


def test_load_task_test_set_independent_of_seed(digits: TaskData) -> None:
    # Execute
    other = load_task("digits", seed=7)

    # Assert
    torch.testing.assert_close(other.x_test, digits.x_test)
    torch.testing.assert_close(other.y_test, digits.y_test)
    torch.testing.assert_close(other.x_train, digits.x_train)


def test_load_task_mnist1d_shapes_and_dtypes(mnist1d_task: TaskData) -> None:
    # Prepare / Execute: the fixture loads the task

    # Assert
    assert mnist1d_task.x_train.shape == (4000, 1, 40)
    assert mnist1d_task.x_test.shape == (1000, 1, 40)
    assert mnist1d_task.input_shape == (1, 40)
    assert mnist1d_task.x_train.dtype == torch.float32 and mnist1d_task.y_train.dtype == torch.int64
    assert set(mnist1d_task.y_train.unique().tolist()) == set(range(10))
    assert abs(mnist1d_task.x_train.mean().item()) < 1e-4
    assert abs(mnist1d_task.x_train.std().item() - 1.0) < 1e-2


def test_load_task_mnist1d_deterministic(mnist1d_task: TaskData) -> None:
    # Prepare: the first labels of the package's default generation (seed 42)
    expected = [2, 6, 4, 5, 6, 6, 6, 0, 3, 1]

    # Execute
    first = mnist1d_task.y_train[:10].tolist()

    # Assert
    assert first == expected


def test_load_task_mnist1d_reads_cache(
    mnist1d_task: TaskData, mnist1d_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: any regeneration would now fail
    import mnist1d.data

    def _fail(*args, **kwargs):
        raise AssertionError("make_dataset called despite a cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", _fail)
    monkeypatch.setenv("APTFLEET_DATA_DIR", str(mnist1d_cache))

    # Execute
    again = load_task("mnist1d", seed=3)

    # Assert
    assert len(list(mnist1d_cache.glob("mnist1d-*.npz"))) == 1
    torch.testing.assert_close(again.x_train, mnist1d_task.x_train)
    torch.testing.assert_close(again.y_test, mnist1d_task.y_test)


def test_load_task_mnist1d_preserves_global_rng(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: an empty cache forces a generation
    monkeypatch.setenv("APTFLEET_DATA_DIR", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)

    # Execute
    load_task("mnist1d")

    # Assert
    assert np.random.rand() == expected_np
    assert random.random() == expected_py


def test_load_task_unknown_task_names_field() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="task='foo'") as info:
        load_task("foo")
    assert all(name in str(info.value) for name in TASK_NAMES)


def test_partition_iid_disjoint_and_complete() -> None:
    # Prepare
    labels = np.repeat(np.arange(10), 23)

    # Execute
    parts = partition_iid(labels, num_partitions=7, seed=0)

    # Assert
    assert len(parts) == 7
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


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


@pytest.mark.parametrize("num_partitions", [0, -1, 1000])
def test_partition_iid_invalid_num_partitions_names_field(num_partitions: int) -> None:
    # Prepare
    labels = np.zeros(100, dtype=np.int64)

    # Execute / Assert
    with pytest.raises(ValueError, match=f"num_partitions={num_partitions}"):
        partition_iid(labels, num_partitions, seed=0)


def test_partition_dirichlet_disjoint_complete_and_min_size(digits: TaskData) -> None:
    # Prepare
    labels = digits.y_train

    # Execute
    parts = partition_dirichlet(labels, num_partitions=10, alpha=0.1, seed=0, min_size=20)

    # Assert
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert min(map(len, parts)) >= 20


def test_partition_dirichlet_small_alpha_skews_labels(digits: TaskData) -> None:
    # Prepare
    labels = digits.y_train.numpy()

    # Execute
    skewed = _label_tv_distance(labels, partition_dirichlet(labels, 10, alpha=0.1, seed=0))
    mild = _label_tv_distance(labels, partition_dirichlet(labels, 10, alpha=100.0, seed=0))
    iid = _label_tv_distance(labels, partition_iid(labels, 10, seed=0))

    # Assert
    assert skewed > 0.4
    assert mild < 0.15 and iid < 0.15


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_partition_dirichlet_invalid_alpha_names_field(alpha: float) -> None:
    # Prepare
    labels = np.arange(100) % 10

    # Execute / Assert
    with pytest.raises(ValueError, match="alpha="):
        partition_dirichlet(labels, 4, alpha=alpha, seed=0)


def test_partition_dirichlet_unreachable_min_size_raises() -> None:
    # Prepare: 20 partitions of at least 10 samples cannot come out of 100 samples
    labels = np.arange(100) % 10

    # Execute / Assert
    with pytest.raises(ValueError, match="min_size=10"):
        partition_dirichlet(labels, 20, alpha=0.5, seed=0, min_size=10)


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


@pytest.mark.parametrize("partition_id", [-1, 4])
def test_client_split_invalid_partition_id_names_field(digits: TaskData, partition_id: int) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=f"partition_id={partition_id}"):
        client_split(digits, partition_id, 4, alpha=None, seed=0)


def test_make_loader_seeded_shuffle() -> None:
    # Prepare
    dataset = TensorDataset(torch.arange(64).float(), torch.arange(64))

    def _order(seed: int) -> list[int]:
        loader = make_loader(dataset, batch_size=16, shuffle=True, seed=seed)
        return torch.cat([y for _, y in loader]).tolist()

    # Execute
    first, second, other = _order(0), _order(0), _order(1)

    # Assert
    assert first == second
    assert first != other
    assert sorted(first) == list(range(64))


def test_make_loader_invalid_batch_size_names_field() -> None:
    # Prepare
    dataset = TensorDataset(torch.zeros(4))

    # Execute / Assert
    with pytest.raises(ValueError, match="batch_size=0"):
        make_loader(dataset, batch_size=0, shuffle=False, seed=0)
