"""APTFedAvg without a network: mock replies straight into configure/aggregate_train."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord

from apt_core import federated as fed
from apt_core.federated import record_keys as keys
from apt_core.quant import choose_exponent, dequantize, quantize
from apt_core.wire import model_tensors
from server.flower.records import RoundReport
from server.flower.strategy import APTFedAvg
from tests.server.flower.strategy_helpers import POLICY, _client_model, _global_tensors, _strategy
from tests.utils.replies import (
    FakeGrid,
    create_apt_reply,
    create_error_reply,
    task_identity,
)


def test_aggregate_train_mixed_bits_matches_float_reference() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    models = [
        _client_model(1, [5, 9, 12]),
        _client_model(2, [8, 6, 4]),
        _client_model(3, [12, 7, 6]),
    ]
    counts = [10, 30, 60]
    replies = [
        create_apt_reply(m, n, node_id=100 + i)
        for i, (m, n) in enumerate(zip(models, counts, strict=True))
    ]

    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)

    # Assert
    assert arrays is not None and metrics is not None
    got = {t.name: t for t in _global_tensors(arrays)}
    total = sum(counts)
    for name in got:
        ref = sum(
            dequantize(t.codes, t.exponent, torch.float64) * n / total
            for m, n in zip(models, counts, strict=True)
            for t in model_tensors(m)
            if t.name == name
        )
        bits = max(t.bits for m in models for t in model_tensors(m) if t.name == name)
        f = choose_exponent(float(ref.abs().max()), bits)
        assert got[name].bits == bits
        assert got[name].exponent == f
        torch.testing.assert_close(got[name].codes, quantize(ref, bits, f))
        step = 2.0**-f
        assert (
            float((dequantize(got[name].codes, f, torch.float64) - ref).abs().max())
            <= step / 2 + 1e-12
        )
    assert [r.global_bits for r in records] == [{"fc1": 12, "fc2": 9, "fc3": 12}]
    assert records[0].participants == 3 and records[0].accuracy == 0.5


def test_aggregate_train_no_valid_reply_keeps_model() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(records=records)

    # Execute
    arrays, metrics = strategy.aggregate_train(1, [create_error_reply(1, "offline")])

    # Assert
    assert arrays is None and metrics is None
    assert records[0].failures == 1 and records[0].participants == 0


def test_configure_train_sends_policy_and_counts_downlink() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    initial = strategy.initial_arrays()
    nbytes = initial[keys.APT_PAYLOAD].numpy().nbytes

    # Execute
    with task_identity():
        messages = list(strategy.configure_train(1, initial, ConfigRecord(), FakeGrid([11, 12])))
    reply = create_apt_reply(
        _client_model(1, [8, 8, 8]),
        10,
        node_id=11,
        history=[(5, 0, 9, 0.3, 0.2), (5, 1, 8, 0.7, 0.1), (10, 0, 10, 0.4, 0.4)],
    )
    strategy.aggregate_train(1, [reply])

    # Assert
    cfg = messages[0].content[keys.CONFIG]
    assert cfg[keys.POLICY_VERSION] == 1 and cfg["policy.bits-max"] == 12
    assert cfg["override.mcu.bits-max"] == 8 and cfg[keys.METHOD] == "apt"
    version, policy, overrides = fed.policy_from_config(cfg)
    assert (version, policy, overrides) == (1, POLICY, {"mcu": {"bits_max": 8}})
    (record,) = records
    by_node = {c.node_id: c for c in record.clients}
    assert by_node[11].downlink_bytes == nbytes and by_node[12].downlink_bytes == nbytes
    assert "no reply" in (by_node[12].failure or "")
    fc1 = by_node[11].layers[0]
    assert fc1.checks == 2 and fc1.gavg == pytest.approx(0.35)
    assert fc1.underflow == pytest.approx(0.3)
    assert record.downlink_bytes == 2 * nbytes


def test_evaluate_global_scores_arrays() -> None:
    # Prepare
    strategy = _strategy()
    initial = strategy.initial_arrays()

    # Execute
    res = strategy.evaluate_global(0, initial)

    # Assert
    assert res is not None and res[keys.ACCURACY] == 0.5


def test_configure_train_keeps_last_policy_when_provider_fails() -> None:
    # Prepare: v2 is invalid (mcu's bits_max below bits_min), then the provider goes down
    answers = [(1, POLICY, {}), (1, POLICY, {}), (2, POLICY, {"mcu": {"bits_max": 3}})]

    def provider() -> tuple:
        version, policy, overrides = answers.pop(0)
        return version, policy, overrides

    def flaky() -> tuple:
        if not answers:
            raise ConnectionError("database is down")
        return provider()

    strategy = APTFedAvg(
        settings=fed.RunSettings(arch="mlp"),
        policy_provider=flaky,
        min_available_nodes=1,
        min_train_nodes=1,
    )
    initial = strategy.initial_arrays()

    # Execute
    with task_identity():
        msgs = [
            list(strategy.configure_train(r, initial, ConfigRecord(), FakeGrid([1])))
            for r in (1, 2, 3)
        ]

    # Assert
    assert [m[0].content[keys.CONFIG][keys.POLICY_VERSION] for m in msgs] == [1, 1, 1]


def test_aggregate_train_device_identity_is_the_sender_node_id() -> None:
    # Prepare: node 2 claims node 1's partition and would like to write its history
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    replies = [
        create_apt_reply(_client_model(1, [8, 8, 8]), 20, node_id=1, partition_id=0),
        create_apt_reply(_client_model(2, [9, 9, 9]), 20, node_id=2, partition_id=0),
    ]
    replies[1].content.config_records[keys.DEVICE]["node-id"] = 1

    # Execute
    strategy.aggregate_train(1, replies)

    # Assert: each reply is recorded under the node id Flower saw it come from
    by_node = {c.node_id: c for c in records[0].clients}
    assert set(by_node) == {1, 2}
    assert [x.bits for x in by_node[2].layers] == [9, 9, 9]
    assert [x.bits for x in by_node[1].layers] == [8, 8, 8]


def test_round_lr_cosine_over_rounds_to_a_tenth() -> None:
    # Prepare
    settings = fed.RunSettings(task="digits", arch="mlp", method="apt", lr=0.1)
    decaying = APTFedAvg(settings=settings, policy_provider=lambda: (1, POLICY, {}), lr_rounds=11)
    constant = APTFedAvg(settings=settings, policy_provider=lambda: (1, POLICY, {}))

    # Execute
    lrs = [decaying.round_lr(r) for r in range(1, 12)]

    # Assert
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.01)
    assert lrs[5] == pytest.approx(0.055)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert constant.round_lr(7) == pytest.approx(0.1)
