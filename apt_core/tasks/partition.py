"""Federated partitions of a task's train set (IID or Dirichlet label skew), at any fleet size.

The rule, for both partitioners: every device holds at least one sample, for any number
of devices ``P >= 1`` and train samples ``N``, and the result depends on the seed alone.

* ``P <= N``: the partitions are disjoint and cover the train set.
* ``P > N``: the train set is dealt ``c = ceil(P / N)`` times over (every sample ``c``
  times), so a sample sits on up to ``c`` devices. A device keeps a sample once: the
  rare device dealt two copies of the same sample holds one sample fewer.

Partition sizes follow from the pool of ``c * N`` samples (``c = 1`` when ``P <= N``):
IID gives every device ``floor(c*N / P)`` or ``ceil(c*N / P)`` samples; Dirichlet aims at
the same sizes, its label skew decides which samples. With the digits task (1,437 train
samples), 10 devices hold about 144 samples each, 1,000 devices 1 or 2, 10,000 devices 1.

Nothing here retries or can fail for a valid argument: there is no size condition to meet
by chance, so no draw to repeat.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from apt_core.errors import DataError
from apt_core.tasks.data import TaskData

#: Rescaling rounds that bring each class's expected demand to its supply (Sinkhorn).
_BALANCE_ITERATIONS = 50
#: Relative gap between a class's expected demand and its supply that counts as met.
_BALANCE_TOLERANCE = 1e-3
#: Floor of a device's share of a class, so that rescaling can always reach it.
_MIN_SHARE = 1e-12


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_label_array(labels: np.ndarray | Tensor) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.ndim != 1 or len(array) == 0:
        raise DataError(
            f"Invalid labels: field 'labels' has shape {array.shape}; expected a non-empty 1-D "
            "array."
        )
    return array


def _check_num_partitions(num_partitions: int) -> None:
    if not _is_int(num_partitions) or num_partitions < 1:
        raise DataError(
            f"Invalid partitioning: num_partitions={num_partitions!r} must be an int >= 1."
        )


def _copies(num_samples: int, num_partitions: int) -> int:
    """How many times the train set is dealt: ``ceil(P / N)``, at least once."""
    return max(1, -(-num_partitions // num_samples))


def _sizes(pool: int, num_partitions: int) -> np.ndarray:
    """Near-equal sizes summing to ``pool``, the larger ones first."""
    base, extra = divmod(pool, num_partitions)
    return base + (np.arange(num_partitions) < extra).astype(np.int64)


def _split_by_device(
    pool: np.ndarray, device_of: np.ndarray, num_partitions: int
) -> list[np.ndarray]:
    """Each device's sorted, distinct sample indices (``pool[j]`` goes to ``device_of[j]``)."""
    order = np.lexsort((pool, device_of))
    samples, devices = pool[order].astype(np.int64), device_of[order]
    # a device dealt two copies of one sample keeps it once
    keep = np.ones(len(samples), dtype=bool)
    keep[1:] = (samples[1:] != samples[:-1]) | (devices[1:] != devices[:-1])
    samples = samples[keep]
    ends = np.cumsum(np.bincount(devices[keep], minlength=num_partitions)).tolist()
    return [samples[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def partition_iid(labels: np.ndarray | Tensor, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Split sample indices uniformly at random into near-equal partitions.

    Device ``i`` takes positions ``i, i + P, i + 2P, ...`` of the pool (one permutation of
    the samples, repeated ``ceil(P / N)`` times); two positions of one device are then never
    copies of the same sample. See the module docstring for the rule at any fleet size.

    Parameters
    ----------
    labels : np.ndarray | Tensor
        1-D labels; only their count matters here.
    num_partitions : int
        Number of partitions (devices), at least 1; may exceed the number of samples.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    list[np.ndarray]
        Sorted, non-empty int64 index arrays. With at most one partition per sample every
        index appears in exactly one of them.
    """
    num_samples = len(_as_label_array(labels))
    _check_num_partitions(num_partitions)
    copies = _copies(num_samples, num_partitions)
    pool = np.tile(np.random.default_rng(seed).permutation(num_samples), copies)
    device_of = np.arange(len(pool)) % num_partitions
    return _split_by_device(pool, device_of, num_partitions)


def partition_dirichlet(
    labels: np.ndarray | Tensor, num_partitions: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Split sample indices with Dirichlet(alpha) label skew: each device its own class mix.

    The steps, all deterministic for a seed:

    1. each device draws its class mix ``p_i ~ Dirichlet([alpha] * K)`` (K classes);
    2. the mixes are rescaled class by class (Sinkhorn) until the expected demand of each
       class, ``sum_i n_i * p_ik``, meets its supply; device sizes ``n_i`` are near-equal
       (see the module docstring), so every device gets at least one sample;
    3. each device's ``n_i`` slots get the classes of its mix by systematic sampling
       (class counts within 1 of ``n_i * p_ik``, unbiased);
    4. slots sorted by class (devices in a random order within a class) are paired with
       the samples sorted by class (random order within a class). Every slot gets a
       sample; where a class's slots and samples differ in number, the slots at the
       edge of its block take a neighbouring class.

    Parameters
    ----------
    labels : np.ndarray | Tensor
        1-D class labels.
    num_partitions : int
        Number of partitions (devices), at least 1; may exceed the number of samples.
    alpha : float
        Dirichlet concentration, > 0. Small values (0.1) give strongly skewed label
        distributions, large values (100) approach IID.
    seed : int
        Seed of the draw.

    Returns
    -------
    list[np.ndarray]
        Sorted, non-empty int64 index arrays. With at most one partition per sample every
        index appears in exactly one of them.

    Raises
    ------
    DataError
        If an argument is out of range.
    """
    label_array = _as_label_array(labels)
    _check_num_partitions(num_partitions)
    if not isinstance(alpha, int | float | np.floating) or not np.isfinite(alpha) or alpha <= 0:
        raise DataError(f"Invalid partitioning: alpha={alpha!r} must be a finite number > 0.")
    rng = np.random.default_rng(seed)
    classes, label_ids = np.unique(label_array, return_inverse=True)
    pool = np.tile(np.arange(len(label_array)), _copies(len(label_array), num_partitions))
    pool_class = np.tile(label_ids, len(pool) // len(label_array))
    sizes = _sizes(len(pool), num_partitions)
    mix = np.maximum(rng.dirichlet([float(alpha)] * len(classes), size=num_partitions), _MIN_SHARE)
    mix = _balanced_mix(mix, sizes, np.bincount(pool_class, minlength=len(classes)))
    slot_device, slot_class = _class_slots(mix, sizes, rng)
    device_rank = rng.permutation(num_partitions)
    slot_order = np.lexsort((device_rank[slot_device], slot_class))
    sample_order = np.lexsort((rng.permutation(len(pool)), pool_class))
    device_of = np.empty(len(pool), dtype=np.int64)
    device_of[sample_order] = slot_device[slot_order]
    return _split_by_device(pool, device_of, num_partitions)


def _balanced_mix(mix: np.ndarray, sizes: np.ndarray, supply: np.ndarray) -> np.ndarray:
    """Rescale each class's share until the devices' expected demand meets its supply.

    Rows stay distributions; a device's preference between two classes changes by the same
    factor on every device, so the skew of the draw is kept.
    """
    for _ in range(_BALANCE_ITERATIONS):
        scale = supply / (sizes @ mix)
        if np.abs(scale - 1.0).max() < _BALANCE_TOLERANCE:
            break
        mix = mix * scale
        mix = mix / mix.sum(axis=1, keepdims=True)
    return mix


def _class_slots(
    mix: np.ndarray, sizes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Every slot's device and class: ``sizes[i]`` slots per device, by systematic sampling.

    Device ``i``'s slots sit at ``u_i + j`` (``u_i`` uniform in [0, 1), ``j < n_i``) on the
    scale of its cumulative expected counts ``cumsum(n_i * p_i)``; a slot takes the class
    whose interval holds it.
    """
    slot_device = np.repeat(np.arange(len(sizes)), sizes)
    first = np.cumsum(sizes) - sizes
    position = rng.random(len(sizes))[slot_device] + (
        np.arange(len(slot_device)) - first[slot_device]
    )
    edges = np.cumsum(mix * sizes[:, None], axis=1)[slot_device]
    slot_class = np.minimum((position[:, None] >= edges).sum(axis=1), mix.shape[1] - 1)
    return slot_device, slot_class


def client_split(
    task: TaskData,
    partition_id: int,
    num_partitions: int,
    alpha: float | None,
    seed: int,
    test_fraction: float = 0.2,
) -> tuple[TensorDataset, TensorDataset]:
    """Return one device's local train and held-out sets, cut from the task's train set.

    Parameters
    ----------
    task : TaskData
        The task whose train set is partitioned; its test set is never touched.
    partition_id : int
        This device's partition, in ``[0, num_partitions)``.
    num_partitions : int
        Number of devices (any number >= 1, see the module docstring).
    alpha : float | None
        Dirichlet concentration of the label skew; ``None`` gives an IID split.
    seed : int
        Seed of the partitioning and of the local split. Every device of a run must use the
        same seed so that the partitions are disjoint.
    test_fraction : float (default: 0.2)
        Share of the partition held out for local evaluation, in ``[0, 1)``. The train set
        keeps at least one sample, so a one-sample device holds nothing out.

    Returns
    -------
    tuple[TensorDataset, TensorDataset]
        The local train set (never empty) and the local held-out set (may be empty).
    """
    parts = partitions(task.y_train, num_partitions, alpha, seed)
    return device_split(task, parts, partition_id, seed, test_fraction)


def partitions(
    labels: np.ndarray | Tensor, num_partitions: int, alpha: float | None, seed: int
) -> list[np.ndarray]:
    """Every device's sample indices: IID when ``alpha`` is None, else Dirichlet(alpha)."""
    if alpha is None:
        return partition_iid(labels, num_partitions, seed)
    return partition_dirichlet(labels, num_partitions, alpha, seed)


def device_split(
    task: TaskData,
    parts: list[np.ndarray],
    partition_id: int,
    seed: int,
    test_fraction: float = 0.2,
) -> tuple[TensorDataset, TensorDataset]:
    """One device's (train, held-out) sets from the fleet's ``parts`` (see :func:`client_split`)."""
    if not _is_int(partition_id) or not 0 <= partition_id < len(parts):
        raise DataError(
            f"Invalid partitioning: partition_id={partition_id!r} must be in [0, {len(parts)})."
        )
    if not 0 <= test_fraction < 1:
        raise DataError(f"Invalid partitioning: test_fraction={test_fraction!r} must be in [0, 1).")
    indices = np.random.default_rng([seed, partition_id]).permutation(parts[partition_id])
    # Keep at least one training sample, however small the partition.
    num_held_out = min(int(round(len(indices) * test_fraction)), len(indices) - 1)
    held_out = torch.from_numpy(np.sort(indices[:num_held_out]))
    train = torch.from_numpy(np.sort(indices[num_held_out:]))
    return (
        TensorDataset(task.x_train[train], task.y_train[train]),
        TensorDataset(task.x_train[held_out], task.y_train[held_out]),
    )
