"""The ClientApp called directly with instruction messages (no Flower runtime)."""

from __future__ import annotations

import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MessageType, RecordDict

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.federated import record_keys as keys
from client.client_app import create_client_app
from client.device import DeviceConfig, SimulatedFailure
from tests.utils.replies import create_instruction

POLICY = PrecisionPolicy(bits_min=5, bits_max=12, check_every=4)
SETTINGS = fed.RunSettings(task="digits", arch="mlp", method="apt", batch_size=64)


def _context(**node_config: object) -> Context:
    cfg = {keys.PARTITION_ID: 1, keys.NUM_PARTITIONS: 4, **node_config}
    return Context(run_id=1, node_id=7, node_config=cfg, state=RecordDict(), run_config={})


def _train_message(
    server_round: int, settings: fed.RunSettings = SETTINGS, overrides: dict | None = None
) -> object:
    model = fed.make_model(settings.task, settings.arch, settings.method, POLICY, seed=0)
    arrays = ArrayRecord({k: Array(v) for k, v in fed.model_arrays(model, settings.method).items()})
    cfg = ConfigRecord(
        {
            **settings.to_config(),
            keys.SERVER_ROUND: server_round,
            **fed.policy_to_config(2, POLICY, overrides or {}),
        }
    )
    return create_instruction(7, RecordDict({keys.ARRAYS: arrays, keys.CONFIG: cfg}))


def test_train_replies_packed_model_and_metrics() -> None:
    # Prepare
    app = create_client_app()
    context = _context()

    # Execute
    reply = app(_train_message(1), context)

    # Assert
    m = reply.content[keys.METRICS]
    (payload,) = reply.content[keys.ARRAYS].values()
    assert m[keys.UPLINK_BYTES] == payload.numpy().nbytes
    assert m[keys.POLICY_VERSION] == 2 and m[keys.NUM_EXAMPLES] > 0
    assert len(m[keys.LAYER_BITS]) == len(m[keys.LAYER_EXPONENTS]) == 3
    assert all(5 <= b <= 12 for b in m[keys.LAYER_BITS] + m[keys.HISTORY_BITS])
    assert len(m[keys.HISTORY_STEP]) == len(m[keys.HISTORY_GAVG]) > 0
    assert reply.content[keys.DEVICE][keys.DEVICE_CLASS] == "standard"
    assert reply.metadata.src_node_id == 7
    assert list(context.state[keys.STATE_DEVICE_BITS][keys.LAYER_BITS]) == list(m[keys.LAYER_BITS])


def test_train_uses_remembered_bits_and_class_override() -> None:
    # Prepare
    app = create_client_app()
    context = _context(**{keys.DEVICE_CLASS: "mcu"})
    context.state[keys.STATE_DEVICE_BITS] = ConfigRecord({keys.LAYER_BITS: [12, 12, 12]})

    # Execute
    reply = app(_train_message(2, overrides={"mcu": {"bits_max": 7}}), context)

    # Assert: remembered 12 bits clamped to the class's 7-bit cap
    m = reply.content[keys.METRICS]
    assert max(m[keys.LAYER_BITS]) <= 7
    assert reply.content[keys.DEVICE][keys.DEVICE_CLASS] == "mcu"


def test_train_fp32_sends_float_state() -> None:
    # Prepare
    app = create_client_app()
    settings = fed.RunSettings(task="digits", arch="mlp", method="fp32", batch_size=64)

    # Execute
    reply = app(_train_message(1, settings), _context())

    # Assert
    arrays = reply.content[keys.ARRAYS]
    assert "fc1.weight" in arrays and reply.content[keys.METRICS][keys.LAYER_BITS] == []


def test_train_fail_at_round_hook_raises() -> None:
    # Prepare
    app = create_client_app()

    # Execute / Assert
    with pytest.raises(SimulatedFailure, match="round 2"):
        app(_train_message(2), _context(**{keys.FAIL_AT_ROUND: 2}))
    with pytest.raises(SimulatedFailure):
        create_client_app({1: {keys.FAIL_AT_ROUND: 3}})(_train_message(3), _context())


def test_evaluate_replies_accuracy() -> None:
    # Prepare
    app = create_client_app()
    msg = _train_message(1)
    evaluate = create_instruction(7, msg.content, MessageType.EVALUATE)

    # Execute
    reply = app(evaluate, _context())

    # Assert
    m = reply.content[keys.METRICS]
    assert 0.0 <= m[keys.EVAL_ACCURACY] <= 1.0 and m[keys.NUM_EXAMPLES] > 0


def test_device_config_validates_node_config() -> None:
    with pytest.raises(ValueError, match="partition-id"):
        DeviceConfig.from_node_config({})
    with pytest.raises(ValueError, match="device-class"):
        DeviceConfig.from_node_config(
            {keys.PARTITION_ID: 0, keys.NUM_PARTITIONS: 1, keys.DEVICE_CLASS: "bad class!"}
        )
