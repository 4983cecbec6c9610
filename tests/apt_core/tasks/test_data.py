"""Tests for the offline datasets and their loaders."""

import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from apt_core.tasks.data import TASK_NAMES, TaskData, load_task, make_loader


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
