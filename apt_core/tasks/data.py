"""Offline benchmark datasets and their loaders (partitions: :mod:`apt_core.tasks.partition`)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from apt_core.errors import DataError

logger = logging.getLogger(__name__)

TASK_NAMES = ("digits", "mnist1d")

#: Seed of the digits train/test split. Fixed, so every run seed scores on the same test set.
_SPLIT_SEED = 0
#: MNIST-1D generation arguments: the defaults of ``mnist1d.data.get_dataset_args()`` in
#: mnist1d 0.0.2.post1 (5000 samples split 4000/1000, 40-step signals), minus the download
#: URL. Pinned here, with the generator seed fixed, so the data never depend on the run seed.
_MNIST1D_ARGS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}


@dataclass(frozen=True, eq=False)
class TaskData:
    """A classification task held in memory as tensors.

    Parameters
    ----------
    name : str
        Task name, one of ``TASK_NAMES``.
    x_train, x_test : Tensor
        float32 inputs of shape ``(N, *input_shape)``, standardized with train statistics.
    y_train, y_test : Tensor
        int64 class labels of shape ``(N,)``.
    num_classes : int
        Number of classes.
    input_shape : tuple[int, ...]
        Shape of one sample, without the batch dimension.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]


def load_task(task: str, seed: int = 0) -> TaskData:
    """Load a benchmark task from local data only (never downloads).

    Parameters
    ----------
    task : str
        ``"digits"`` (scikit-learn's bundled 8x8 digits, inputs ``(1, 8, 8)``) or
        ``"mnist1d"`` (MNIST-1D generated locally and cached, inputs ``(1, 40)``).
    seed : int (default: 0)
        The run seed. It does not change the data: the train/test split and the generated
        signals are fixed so that test accuracies are comparable across seeds. Per-seed
        randomness lives in the partitioning (:func:`apt_core.tasks.partition.client_split`)
        and the loaders.

    Returns
    -------
    TaskData
        Standardized float32 inputs and int64 labels.
    """
    if task not in TASK_NAMES:
        raise DataError(f"Unknown task: task={task!r} is not one of {list(TASK_NAMES)}.")
    if task == "digits":
        x_train, y_train, x_test, y_test = _digits_arrays()
    else:
        x_train, y_train, x_test, y_test = _mnist1d_arrays()
    mean, std = float(x_train.mean()), float(x_train.std())
    logger.debug(
        "Loaded task %s (seed %s): %s train, %s test samples", task, seed, len(y_train), len(y_test)
    )
    return TaskData(
        name=task,
        x_train=torch.from_numpy(((x_train - mean) / std).astype(np.float32)),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(((x_test - mean) / std).astype(np.float32)),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=10,
        input_shape=tuple(x_train.shape[1:]),
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Imported lazily: scikit-learn is slow to import and only this task needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=_SPLIT_SEED
    )
    return x_train, y_train, x_test, y_test


def _cache_dir() -> Path:
    env = os.environ.get("APTFLEET_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "aptfleet"


def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # The package version is part of the key: its generator code defines the data too.
    identity = {**_MNIST1D_ARGS, "mnist1d": importlib.metadata.version("mnist1d")}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        try:
            with np.load(path) as cached:
                return cached["x"], cached["y"], cached["x_test"], cached["y_test"]
        except (OSError, KeyError, ValueError) as err:
            logger.warning("Ignoring unreadable MNIST-1D cache %s (%s); regenerating", path, err)
    arrays = _generate_mnist1d(dict(_MNIST1D_ARGS))
    _save_npz_atomic(path, arrays)
    logger.info("Generated MNIST-1D and cached it at %s", path)
    return arrays


def _generate_mnist1d(
    args: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Imported lazily: the package pulls in matplotlib and scipy, which a cache hit skips.
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    # make_dataset reseeds and draws from the global numpy and random generators; restore
    # them so loading a task never changes the caller's random stream.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (data["x"][:, None, :], data["y"], data["x_test"][:, None, :], data["y_test"])


def _save_npz_atomic(
    path: Path, arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> None:
    # Simulated clients may load concurrently: write a private file, then rename it in place.
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y, x_test, y_test = arrays
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, x=x, y=y, x_test=x_test, y_test=y_test)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """Return a single-process DataLoader whose shuffling is reproducible from ``seed``."""
    if not _is_int(batch_size) or batch_size < 1:
        raise DataError(f"Invalid loader: batch_size={batch_size!r} must be an int >= 1.")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0
    )
