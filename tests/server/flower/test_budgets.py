"""Device-class budgets in a run: caps derived per model, folded into the round's policy."""

from __future__ import annotations

import pytest

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.errors import BudgetError
from apt_core.federated.budget import Budget, training_memory_bytes
from server.flower.budgets import (
    BudgetCapper,
    budgeted_provider,
    class_node_config,
    class_report,
    model_profiles,
    parse_budget_option,
    parse_budgets,
    with_budgets,
)
from server.flower.records import RoundReport
from tests.server.flower.strategy_helpers import POLICY, _client_model, _strategy
from tests.utils.replies import create_apt_reply, create_error_reply

RUN = fed.RunSettings(task="digits", arch="cnn")


def _memory(bits: int, capper: BudgetCapper) -> int:
    return training_memory_bytes(model_profiles("digits", "cnn"), bits, capper.workload)


def test_budgeted_provider_sends_each_class_its_cap() -> None:
    # Prepare: mcu fits 6 bits, phone 8, gateway 12 (the fleet's bits_max)
    capper = BudgetCapper.for_run(RUN, clients=10)
    budgets = {
        "mcu": Budget(_memory(6, capper)),
        "phone": Budget(_memory(9, capper) - 1),
        "gateway": Budget(10**9),
    }
    provider = budgeted_provider(
        lambda: (3, POLICY, {"mcu": {"rounding": "nearest"}}), budgets, capper
    )

    # Execute
    version, policy, overrides = provider()

    # Assert
    assert (version, policy) == (3, POLICY)
    assert overrides == {
        "mcu": {"rounding": "nearest", "bits_max": 6},
        "phone": {"bits_max": 8},
        "gateway": {"bits_max": 12},
    }
    config = fed.policy_to_config(version, policy, overrides)
    assert config["override.mcu.bits-max"] == 6 and config["override.phone.bits-max"] == 8


def test_budgeted_provider_refuses_a_budget_no_width_fits() -> None:
    # Prepare: one byte short of POLICY.bits_min = 4
    capper = BudgetCapper.for_run(RUN, clients=10)
    budgets = {"mcu": Budget(_memory(4, capper) - 1)}

    # Execute / Assert
    with pytest.raises(BudgetError, match=r"Device class 'mcu'.*'memory_bytes'"):
        budgeted_provider(lambda: (1, POLICY, {}), budgets, capper)


def test_run_workload_is_a_mean_device_share() -> None:
    # Prepare / Execute: digits has 1,437 training examples; 80% of a tenth is trained on
    capper = BudgetCapper.for_run(RUN, clients=10)
    # Assert
    assert capper.workload.samples == 114
    assert capper.workload.epochs == RUN.local_epochs
    assert capper.workload.batch_size == RUN.batch_size


def test_parse_budgets_names_the_class() -> None:
    # Execute / Assert
    with pytest.raises(BudgetError, match=r"Device class 'phone'.*'energy_j' = 0"):
        parse_budgets({"mcu": {"memory_bytes": 10}, "phone": {"memory_bytes": 10, "energy_j": 0}})


def test_aggregate_train_records_each_device_cap() -> None:
    # Prepare: the helper strategy's overrides cap "mcu" at 8 bits (fleet bits_max 12)
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    replies = [
        create_apt_reply(_client_model(1, [8, 8, 8]), 20, node_id=1, device_class="mcu"),
        create_apt_reply(_client_model(2, [9, 9, 9]), 20, node_id=2),
        create_error_reply(3, "offline"),
    ]

    # Execute
    strategy.aggregate_train(1, replies)

    # Assert
    caps = {c.node_id: c.bits_cap for c in records[0].clients}
    assert caps == {1: 8, 2: 12, 3: 12}


def test_aggregate_train_float_method_records_no_cap() -> None:
    # Prepare
    records: list[RoundReport] = []
    strategy = _strategy(method="fp32", records=records)

    # Execute
    strategy.aggregate_train(1, [create_error_reply(3, "offline")])

    # Assert
    assert [c.bits_cap for c in records[0].clients] == [None]


def test_parse_budget_option_reads_bytes_and_joules() -> None:
    # Execute / Assert
    assert parse_budget_option("mcu=150000") == ("mcu", Budget(150_000))
    assert parse_budget_option("phone=165000:0.5") == ("phone", Budget(165_000, 0.5))


@pytest.mark.parametrize("spec", ["mcu", "m c u=10", "mcu=lots", "mcu=0", "mcu=10:-1"])
def test_parse_budget_option_bad_value_named(spec: str) -> None:
    # Execute / Assert
    with pytest.raises(BudgetError, match=f"--budget '{spec}'"):
        parse_budget_option(spec)


def test_class_report_sums_trained_client_rounds_per_class() -> None:
    # Prepare: one round, an mcu device capped at 8 that trained, a failed standard one
    records: list[RoundReport] = []
    strategy = _strategy(records=records)
    replies = [
        create_apt_reply(_client_model(1, [6, 7, 8]), 20, node_id=1, device_class="mcu"),
        create_error_reply(3, "offline"),
    ]
    strategy.aggregate_train(1, replies)

    # Execute
    report = class_report(records)

    # Assert
    assert report["mcu"]["caps"] == [8] and report["mcu"]["trained"] == 1
    assert report["mcu"]["mean_bits"] == pytest.approx(7.0)
    assert report["standard"] == {
        "client_rounds": 1,
        "trained": 0,
        "caps": [12],
        "energy_j": 0.0,
        "uplink_bytes": 0,
        "mean_bits": None,
    }


def test_class_node_config_cycles_classes_and_keeps_extras() -> None:
    # Execute
    nodes = class_node_config(5, ["mcu", "phone"], {1: {"fail-at-round": 2, "device-class": "x"}})

    # Assert
    assert [nodes[p]["device-class"] for p in range(5)] == ["mcu", "x", "mcu", "phone", "mcu"]
    assert nodes[1]["fail-at-round"] == 2
    assert class_node_config(3, None, {2: {"fail-at-round": 1}}) == {2: {"fail-at-round": 1}}


def test_with_budgets_without_budgets_is_the_provider() -> None:
    # Prepare
    def provider() -> tuple[int, PrecisionPolicy, dict[str, dict[str, object]]]:
        return 1, POLICY, {}

    # Execute / Assert
    assert with_budgets(provider, None, RUN, 10) is provider
    capped = with_budgets(provider, {"mcu": Budget(10**9)}, RUN, 10)
    assert capped()[2] == {"mcu": {"bits_max": POLICY.bits_max}}
