"""APTFedAvg's round accounting counts only what it aggregated (issue 11, honest savings)."""

from __future__ import annotations

from apt_core import federated as fed
from apt_core.conversion import apt_layers
from apt_core.federated import record_keys as keys
from server.flower.global_model import round_mean_bits
from server.flower.records import ClientReport, LayerReport, RoundReport
from tests.server.flower.strategy_helpers import _client_model, _strategy
from tests.utils.replies import create_apt_reply


def test_aggregate_train_rejected_reply_energy_not_counted() -> None:
    # Prepare: two accepted replies of 1.5 J, one out-of-policy reply claiming 1000 J
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    good = [
        create_apt_reply(_client_model(s, [8, 8, 8]), 20, node_id=s, metrics={keys.ENERGY_J: 1.5})
        for s in (1, 2)
    ]
    low_bits = create_apt_reply(
        _client_model(3, [3, 8, 8]), 20, node_id=3, metrics={keys.ENERGY_J: 1000.0}
    )

    # Execute
    strategy.aggregate_train(1, [*good, low_bits])

    # Assert
    (record,) = records
    by_node = {c.node_id: c for c in record.clients}
    assert by_node[3].rejected is not None
    assert by_node[3].energy_j == 0.0
    assert record.energy_j == 3.0


def test_aggregate_train_growth_rejected_reply_energy_not_counted() -> None:
    # Prepare: a reply whose weights grew 2**10 times the global model's in one round
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    strategy.initial_arrays()
    honest = create_apt_reply(
        _client_model(1, [8, 8, 8]), 20, node_id=1, metrics={keys.ENERGY_J: 2.0}
    )
    grown = _client_model(2, [8, 8, 8])
    for layer in apt_layers(grown).values():
        layer.weight_exp.sub_(10)
    hostile = create_apt_reply(grown, 20, node_id=2, metrics={keys.ENERGY_J: 500.0})

    # Execute
    strategy.aggregate_train(1, [honest, hostile])

    # Assert
    (record,) = records
    by_node = {c.node_id: c for c in record.clients}
    assert "more than 64x" in (by_node[2].rejected or "")
    assert by_node[2].energy_j == 0.0 and record.energy_j == 2.0


def test_round_mean_bits_divides_by_devices_with_bits_only() -> None:
    # Prepare: one device at 8 bits on every layer, one without per-layer rows
    template = fed.make_model("digits", "mlp", "apt")
    names = list(apt_layers(template))
    at_8 = ClientReport(node_id=1, layers=[LayerReport(n, 8, 4, 0.0, 0.0) for n in names])
    without = ClientReport(node_id=2)

    # Execute
    mean = round_mean_bits(template, [at_8, without])

    # Assert: 8, not (8 + nothing) / 2 = 4
    assert mean == 8.0
    assert round_mean_bits(template, [without]) is None
