"""The seeded partition sampler: same seed and fleet, same devices, whatever the node ids."""

from __future__ import annotations

import time

import pytest
from flwr.app import ConfigRecord

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from server.flower.sampling import IDENTIFY, IDENTIFY_BATCH, PartitionSampler
from server.flower.settings import ServerSettings
from server.flower.strategy import APTFedAvg
from tests.utils.replies import FakeGrid, task_identity


def _fleet(node_ids: list[int]) -> FakeGrid:
    """Node ``node_ids[i]`` is partition ``(7 * i) % len``: ids and partitions unrelated."""
    n = len(node_ids)
    return FakeGrid(node_ids, {node: (7 * i) % n for i, node in enumerate(node_ids)})


def _sampled_partitions(grid: FakeGrid, seed: int, rounds: int, size: int) -> list[list[int]]:
    sampler = PartitionSampler(seed, timeout=1.0)
    with task_identity():
        sampler.identify(grid, grid.get_node_ids())
    return [
        sorted(grid.partitions[n] for n in sampler.sample(r, grid.node_ids, size))  # type: ignore[misc]
        for r in range(1, rounds + 1)
    ]


def test_same_seed_samples_same_partitions_under_other_node_ids() -> None:
    a = _fleet([9000 + 13 * i for i in range(20)])
    b = _fleet([5 + 101 * (19 - i) for i in range(20)])
    # the two fleets hold the same partitions under unrelated node ids
    assert sorted(a.partitions.values()) == sorted(b.partitions.values()) == list(range(20))
    first = _sampled_partitions(a, seed=3, rounds=10, size=10)
    assert first == _sampled_partitions(b, seed=3, rounds=10, size=10)
    assert len({tuple(p) for p in first}) > 1  # rounds differ
    assert first != _sampled_partitions(a, seed=4, rounds=10, size=10)  # seeds differ


def test_nodes_are_asked_once_and_silent_ones_follow_identified_ones() -> None:
    grid = FakeGrid([30, 10, 20, 40], {30: 1, 10: None, 20: 0})  # 10 errs, 40 is silent
    sampler = PartitionSampler(0, timeout=1.0)
    with task_identity():
        sampler.identify(grid, grid.get_node_ids())
        sampler.identify(grid, grid.get_node_ids())
        grid.node_ids.append(50)
        grid.partitions[50] = 2
        sampler.identify(grid, grid.get_node_ids())
    assert grid.queries == [[10, 20, 30, 40], [50]]
    assert sampler.order(grid.node_ids) == [20, 30, 50, 10, 40]
    assert sorted(sampler.sample(1, grid.node_ids, 99)) == [10, 20, 30, 40, 50]


def test_identify_sends_the_identify_query() -> None:
    sent: list[str] = []

    class Recording(FakeGrid):
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            messages = list(messages)
            sent.extend(m.metadata.message_type for m in messages)
            assert timeout is not None and 0 < timeout <= 2.5
            return super().send_and_receive(messages, timeout=timeout)

    with task_identity():
        PartitionSampler(0, timeout=2.5).identify(Recording([1, 2]), [1, 2])
    assert sent == [IDENTIFY, IDENTIFY]


@pytest.mark.parametrize("fraction,expected", [(0.5, 5), (0.25, 2)])
def test_configure_train_sends_to_the_seeded_sample(fraction: float, expected: int) -> None:
    nodes = [1000 + 37 * i for i in range(10)]
    runs = []
    for order in (nodes, nodes[::-1]):  # other node ids for each partition
        grid = _fleet(order)
        strategy = APTFedAvg(
            settings=fed.RunSettings(task="digits", arch="mlp", method="fp32", seed=5),
            policy_provider=lambda: (1, PrecisionPolicy(), {}),
            fraction_train=fraction,
            min_available_nodes=2,
            min_train_nodes=1,
        )
        with task_identity():
            initial = strategy.initial_arrays()
            msgs = list(strategy.configure_train(4, initial, ConfigRecord(), grid))
        assert len(msgs) == expected
        assert all(m.content.config_records["config"]["server-round"] == 4 for m in msgs)
        runs.append(sorted(grid.partitions[m.metadata.dst_node_id] for m in msgs))  # type: ignore[misc]
    assert runs[0] == runs[1]
    assert runs[0] == _sampled_partitions(_fleet(nodes), seed=5, rounds=4, size=expected)[-1]


def test_random_sampling_asks_nothing_and_is_a_run_config_setting() -> None:
    # Prepare
    settings = ServerSettings(sampling="random")
    grid = _fleet([1000 + 37 * i for i in range(10)])
    strategy = APTFedAvg(
        settings=fed.RunSettings(task="digits", arch="mlp", method="fp32"),
        policy_provider=lambda: (1, PrecisionPolicy(), {}),
        sampling=ServerSettings.from_run_config(settings.to_run_config()).sampling,
        fraction_train=0.5,
        min_available_nodes=2,
    )

    # Execute
    with task_identity():
        msgs = list(strategy.configure_train(1, strategy.initial_arrays(), ConfigRecord(), grid))

    # Assert
    assert len(msgs) == 5 and grid.queries == []
    assert ServerSettings().sampling == "seeded"
    with pytest.raises(ValueError, match="sampling='fixed' is not one of"):
        ServerSettings(sampling="fixed")


def test_identify_asks_a_large_fleet_in_batches() -> None:
    grid = _fleet(list(range(5, 5 + 2 * IDENTIFY_BATCH + 50)))
    sampler = PartitionSampler(0, timeout=1.0)
    with task_identity():
        sampler.identify(grid, grid.get_node_ids())
    assert [len(q) for q in grid.queries] == [IDENTIFY_BATCH, IDENTIFY_BATCH, 50]
    assert sorted(p for p in sampler.partitions.values() if p is not None) == list(
        range(2 * IDENTIFY_BATCH + 50)
    )


def test_identify_stops_asking_when_its_time_is_up() -> None:
    # Prepare: a fleet whose first batch uses up the whole timeout
    class Slow(FakeGrid):
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            replies = super().send_and_receive(messages, timeout=timeout)
            time.sleep(0.3)
            return replies

    grid = Slow(list(range(2 * IDENTIFY_BATCH)))
    sampler = PartitionSampler(0, timeout=0.2)

    # Execute
    with task_identity():
        sampler.identify(grid, grid.get_node_ids())

    # Assert: one batch asked and identified; the rest silent, sampled after them
    assert [len(q) for q in grid.queries] == [IDENTIFY_BATCH]
    assert sum(p is not None for p in sampler.partitions.values()) == IDENTIFY_BATCH
    assert len(sampler.order(grid.node_ids)) == 2 * IDENTIFY_BATCH
