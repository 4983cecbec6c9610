"""fp32-q8 end to end without a network: the real strategy and the real ClientApp in-process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.federated import record_keys as keys
from apt_core.federated.q8 import SCALES_KEY
from client.array_records import numpy_arrays
from client.client_app import create_client_app
from server.flower.records import RoundReport
from server.flower.server_app import make_evaluator
from server.flower.strategy import APTFedAvg
from tests.utils.replies import FakeGrid, create_instruction, task_identity

NODES = [11, 12, 13]


def _run(rounds: int) -> tuple[APTFedAvg, list[RoundReport]]:
    """A tiny federation: 3 devices of digits/mlp, every device sampled, ``rounds`` rounds."""
    records: list[RoundReport] = []
    strategy = APTFedAvg(
        settings=fed.RunSettings(task="digits", arch="mlp", method="fp32-q8", batch_size=64),
        policy_provider=lambda: (1, PrecisionPolicy(), {}),
        recorder=records.append,
        evaluator=make_evaluator("digits", "fp32-q8"),
        min_available_nodes=3,
        min_train_nodes=3,
        fraction_train=1.0,
    )
    app = create_client_app()
    contexts = {
        n: Context(
            run_id=1,
            node_id=n,
            node_config={keys.PARTITION_ID: i, keys.NUM_PARTITIONS: len(NODES)},
            state=RecordDict(),
            run_config={},
        )
        for i, n in enumerate(NODES)
    }
    arrays = strategy.initial_arrays()
    for r in range(1, rounds + 1):
        with task_identity():
            messages = list(strategy.configure_train(r, arrays, ConfigRecord(), FakeGrid(NODES)))
        replies = []
        for m in messages:
            node = int(m.metadata.dst_node_id)
            replies.append(app(create_instruction(node, m.content), contexts[node]))
        new, _ = strategy.aggregate_train(r, replies)
        assert new is not None
        arrays = new
    return strategy, records


@pytest.fixture(scope="module")
def federation() -> tuple[APTFedAvg, list[RoundReport]]:
    """Two rounds of the tiny federation."""
    return _run(rounds=2)


def test_fp32_q8_tiny_federation_trains_with_8_bit_wire(
    federation: tuple[APTFedAvg, list[RoundReport]],
) -> None:
    # Prepare
    strategy, records = federation

    # Assert: every reply accepted, 8-bit arrays both ways (int8 codes + one scale each)
    template = fed.float_state(strategy.template)
    q8_bytes = sum(t.numel() for t in template.values()) + 4 * len(template)
    for rec in records:
        assert rec.participants == 3 and rec.rejections == 0 and rec.failures == 0
        assert {c.uplink_bytes for c in rec.clients} == {q8_bytes}
        assert {c.downlink_bytes for c in rec.clients} == {q8_bytes}
        assert all(c.energy_j > 0 for c in rec.clients) and rec.mean_bits == 32.0
    assert records[-1].accuracy is not None and records[-1].accuracy > 0.5
    sent = numpy_arrays(strategy._global)
    assert sent[SCALES_KEY].dtype == np.float32
    assert all(a.dtype == np.int8 for k, a in sent.items() if k != SCALES_KEY)


def test_fp32_q8_server_keeps_float_model_of_which_it_sends_8_bits(
    federation: tuple[APTFedAvg, list[RoundReport]],
) -> None:
    # Prepare
    strategy, _ = federation

    # Assert: the server's float32 model is within half a step of what it sent
    master = strategy._master
    assert master is not None
    sent = strategy._sent_state()
    assert sent is not None
    scales = numpy_arrays(strategy._global)[SCALES_KEY].tolist()
    for (name, w), scale in zip(master.items(), scales, strict=True):
        assert float((w - sent[name]).abs().max()) <= scale / 2 + 1e-6
    assert any(not torch.equal(master[n], sent[n]) for n in master)
