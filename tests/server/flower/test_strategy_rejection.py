"""APTFedAvg rejects bad, stale and hostile replies and keeps the honest aggregate."""

from __future__ import annotations

import numpy as np
import torch

from apt_core import federated as fed
from apt_core.federated import record_keys as keys
from apt_core.packing import PackedTensor, pack_tensors
from apt_core.wire import model_tensors
from server.flower.records import RoundReport
from tests.server.flower.strategy_helpers import POLICY, _client_model, _strategy
from tests.utils.replies import (
    create_apt_reply,
    create_error_reply,
    create_mock_reply,
)


def test_aggregate_train_rejects_bad_replies_and_completes_round() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    good = [create_apt_reply(_client_model(s, [8, 8, 8]), 20, node_id=s) for s in (1, 2)]
    payload = fed.model_arrays(_client_model(3, [8, 8, 8]), "apt")[keys.APT_PAYLOAD]
    truncated = create_mock_reply(
        {keys.APT_PAYLOAD: payload[:-7]}, 20, node_id=3, metrics={keys.LAYER_BITS: [8, 8, 8]}
    )
    low_bits = create_apt_reply(_client_model(4, [3, 8, 8]), 20, node_id=4)
    wrong_shape_model = fed.make_model("mnist1d", "mlp", "apt", POLICY, seed=5)
    wrong_shape = create_apt_reply(wrong_shape_model, 20, node_id=5)
    mcu_too_wide = create_apt_reply(_client_model(6, [10, 8, 8]), 20, node_id=6, device_class="mcu")
    failed = create_error_reply(7, "<class 'RuntimeError'>:<'battery died'>")

    # Execute
    arrays, _ = strategy.aggregate_train(
        1, good + [truncated, low_bits, wrong_shape, mcu_too_wide, failed]
    )

    # Assert
    assert arrays is not None
    (record,) = records
    by_node = {c.node_id: c for c in record.clients}
    assert record.participants == 2 and record.rejections == 4 and record.failures == 1
    assert "truncated" in (by_node[3].rejected or "")
    assert "bits=3" in (by_node[4].rejected or "") and "[4, 12]" in (by_node[4].rejected or "")
    assert "shape" in (by_node[5].rejected or "")
    assert "[4, 8]" in (by_node[6].rejected or "")
    assert "battery died" in (by_node[7].failure or "")
    assert all(by_node[n].rejected is None and len(by_node[n].layers) == 3 for n in (1, 2))
    assert record.uplink_bytes == sum(c.uplink_bytes for c in record.clients)


def test_aggregate_train_fp32_rejects_nan_and_wrong_shape() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy("fp32", records)
    states = [fed.float_state(fed.make_model("digits", "mlp", "fp32", seed=s)) for s in (1, 2)]
    arrays = [{k: v.numpy() for k, v in s.items()} for s in states]
    nan = {k: v.copy() for k, v in arrays[0].items()}
    nan["fc1.weight"][0, 0] = np.nan
    wrong = {k: v.copy() for k, v in arrays[0].items()}
    wrong["fc2.bias"] = np.zeros(3, dtype=np.float32)
    replies = [
        create_mock_reply(arrays[0], 10, node_id=1),
        create_mock_reply(arrays[1], 30, node_id=2),
        create_mock_reply(nan, 10, node_id=3),
        create_mock_reply(wrong, 10, node_id=4),
    ]

    # Execute
    out, _ = strategy.aggregate_train(1, replies)

    # Assert
    assert out is not None
    expected = {k: 0.25 * states[0][k] + 0.75 * states[1][k] for k in states[0]}
    for k, v in out.items():
        torch.testing.assert_close(torch.from_numpy(v.numpy()), expected[k])
    by_node = {c.node_id: c for c in records[0].clients}
    assert "NaN" in (by_node[3].rejected or "")
    assert "shape" in (by_node[4].rejected or "")
    assert records[0].mean_bits == 32.0 and records[0].packed_model


def test_aggregate_train_rejects_stale_policy_version() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(records=records, version=3)
    stale = create_apt_reply(
        _client_model(1, [8, 8, 8]), 10, node_id=1, metrics={keys.POLICY_VERSION: 2}
    )
    fresh = create_apt_reply(
        _client_model(2, [8, 8, 8]), 10, node_id=2, metrics={keys.POLICY_VERSION: 3}
    )

    # Execute
    strategy.aggregate_train(1, [stale, fresh])

    # Assert
    by_node = {c.node_id: c for c in records[0].clients}
    assert "policy version 2" in (by_node[1].rejected or "")
    assert by_node[2].policy_version == 3 and records[0].policy_version == 3


def test_aggregate_train_rejects_history_outside_policy() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    reply = create_apt_reply(
        _client_model(1, [8, 8, 8]), 10, node_id=1, history=[(5, 0, 14, 0.3, 0.2)]
    )

    # Execute
    strategy.aggregate_train(1, [reply])

    # Assert
    assert "bits=14" in (records[0].clients[0].rejected or "")


def test_aggregate_train_rejects_non_uint8_payload() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    payload = fed.model_arrays(_client_model(1, [8, 8, 8]), "apt")[keys.APT_PAYLOAD]
    reply = create_mock_reply(
        {keys.APT_PAYLOAD: payload.astype(np.float32)},
        10,
        node_id=1,
        metrics={keys.LAYER_BITS: [8, 8, 8]},
    )

    # Execute
    strategy.aggregate_train(1, [reply])

    # Assert
    assert "1-D uint8" in (records[0].clients[0].rejected or "")


def _forged(model: torch.nn.Module, edit) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The packed payload of ``model`` with ``edit`` applied to its bytes or tensors."""
    tensors = model_tensors(model)
    payload = edit(tensors) if not isinstance(edit, bytes) else edit
    return np.frombuffer(payload, dtype=np.uint8).copy()


def test_aggregate_train_hostile_replies_leave_global_equal_to_honest_aggregate() -> None:
    # Prepare: two honest devices and one hostile reply of every kind
    honest = [create_apt_reply(_client_model(s, [8, 8, 8]), 20 * s, node_id=s) for s in (1, 2)]
    victim = _client_model(9, [8, 8, 8])
    good_payload = pack_tensors(model_tensors(victim))
    bits = {keys.LAYER_BITS: [8, 8, 8]}

    def forged_exponent(ts: list) -> bytes:  # huge values: exponent pushed 40 bits down
        ts[0] = PackedTensor(ts[0].name, ts[0].codes, ts[0].bits, ts[0].exponent - 40)
        return pack_tensors(ts)

    wrong_version = bytearray(good_payload)
    wrong_version[4:6] = (99).to_bytes(2, "little")
    hostile = {
        "huge values": _forged(victim, forged_exponent),
        "wrong format version": _forged(victim, bytes(wrong_version)),
        "oversized": _forged(victim, good_payload + bytes(4096)),
        "truncated": _forged(victim, good_payload[:-9]),
    }
    bad = [
        create_mock_reply({keys.APT_PAYLOAD: p}, 1000, node_id=10 + i, metrics=bits)
        for i, p in enumerate(hostile.values())
    ]
    bad.append(create_apt_reply(_client_model(20, [15, 8, 8]), 1000, node_id=20))  # bits
    records: list[RoundReport] = []
    attacked, clean = _strategy(records=records), _strategy()
    attacked.initial_arrays()
    clean.initial_arrays()

    # Execute
    got, _ = attacked.aggregate_train(1, honest + bad)
    want, _ = clean.aggregate_train(1, honest)

    # Assert: every hostile reply is rejected with its reason, the model is the honest one
    assert got is not None and want is not None
    assert got[keys.APT_PAYLOAD].numpy().tobytes() == want[keys.APT_PAYLOAD].numpy().tobytes()
    reasons = {c.node_id: c.rejected for c in records[0].clients}
    assert "more than 64x" in (reasons[10] or "")
    assert "version=99" in (reasons[11] or "")
    assert "trailing" in (reasons[12] or "")
    assert "truncated" in (reasons[13] or "")
    assert "bits=15" in (reasons[20] or "")
    assert records[0].rejections == 5 and records[0].participants == 2


def test_aggregate_train_fp32_rejects_inf_and_huge_values() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy("fp32", records)
    strategy.initial_arrays()
    state = {
        k: v.numpy()
        for k, v in fed.float_state(fed.make_model("digits", "mlp", "fp32", seed=1)).items()
    }
    inf = {k: v.copy() for k, v in state.items()}
    inf["fc2.weight"][1, 1] = np.inf
    huge = {k: v.copy() for k, v in state.items()}
    huge["fc3.bias"][0] = 1e30
    replies = [
        create_mock_reply(state, 10, node_id=1),
        create_mock_reply(inf, 10, node_id=2),
        create_mock_reply(huge, 10, node_id=3),
    ]

    # Execute
    out, _ = strategy.aggregate_train(1, replies)

    # Assert
    assert out is not None
    for k, v in out.items():
        torch.testing.assert_close(torch.from_numpy(v.numpy()), torch.from_numpy(state[k]))
    reasons = {c.node_id: c.rejected for c in records[0].clients}
    assert "NaN or Inf" in (reasons[2] or "") and "more than 64x" in (reasons[3] or "")


def test_aggregate_train_same_model_whatever_order_the_replies_arrive_in() -> None:
    # Prepare: five devices' float models; the same replies in two arrival orders
    states = [fed.float_state(fed.make_model("digits", "mlp", "fp32", seed=s)) for s in range(5)]
    replies = [
        create_mock_reply(
            {k: v.numpy() for k, v in state.items()}, 7 + 3 * i, node_id=90 - i, partition_id=i
        )
        for i, state in enumerate(states)
    ]
    orders = [replies, [replies[i] for i in (3, 0, 4, 2, 1)]]

    # Execute
    outs = [_strategy("fp32").aggregate_train(1, order)[0] for order in orders]

    # Assert: bit for bit (float sums in arrival order differed in the last bits)
    assert outs[0] is not None and outs[1] is not None
    for k in outs[0]:
        assert np.array_equal(outs[0][k].numpy(), outs[1][k].numpy()), k
