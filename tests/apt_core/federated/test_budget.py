"""Tests of the device-class budget derivation (apt_core.federated.budget) on hand numbers."""

from __future__ import annotations

import math

import pytest

from apt_core.config import PrecisionPolicy
from apt_core.cost import LayerProfile, step_energy
from apt_core.errors import BudgetError
from apt_core.federated.budget import (
    Budget,
    Workload,
    bits_cap,
    capped_overrides,
    class_caps,
    round_energy_j,
    training_memory_bytes,
)

#: Two layers, 1,000 + 600 parameters, 40 + 24 input activations per sample.
PROFILES = {
    "a": LayerProfile(name="a", params=1000, macs=5000, input_grad=False, act_numel=40),
    "b": LayerProfile(name="b", params=600, macs=3000, input_grad=True, act_numel=24),
}
WORK = Workload(batch_size=10, samples=95, epochs=2, act_bits=8, state_bits=8)


def _memory(bits: int) -> int:
    """The hand count: weights at bits, int8 momentum, one batch of int8 GEMM inputs."""
    return (1600 * bits + 1600 * 8 + (40 + 24) * 10 * 8) // 8


def test_training_memory_bytes_matches_hand_count() -> None:
    # Prepare / Execute / Assert
    for bits in (2, 6, 8, 12, 16):
        assert training_memory_bytes(PROFILES, bits, WORK) == _memory(bits)


def test_round_energy_counts_examples_and_steps() -> None:
    # Prepare
    one = step_energy(PROFILES, 1, "fixed", {"a": 6, "b": 6}, 8, 8, 8)
    # Execute
    energy = round_energy_j(PROFILES, 6, WORK)
    # Assert: 95 examples x 2 epochs through the GEMMs; ceil(95 / 10) x 2 = 20 steps of movement
    assert math.isclose(energy, one.gemm_j * 190 + one.move_j * 20, rel_tol=1e-12)


def test_bits_cap_is_the_highest_width_that_fits() -> None:
    # Prepare: just enough for 8 bits, one byte short of 9
    budget = Budget(memory_bytes=_memory(8))
    # Execute / Assert
    assert bits_cap(PROFILES, budget, WORK, (4, 12)) == 8
    assert bits_cap(PROFILES, Budget(_memory(9) - 1), WORK, (4, 12)) == 8
    assert bits_cap(PROFILES, Budget(10**9), WORK, (4, 12)) == 12


def test_bits_cap_energy_budget_lowers_the_cap() -> None:
    # Prepare: memory allows 12 bits, energy only 6
    energy = round_energy_j(PROFILES, 6, WORK)
    budget = Budget(memory_bytes=10**9, energy_j=energy * (1 + 1e-9))
    # Execute / Assert
    assert bits_cap(PROFILES, budget, WORK, (4, 12)) == 6


def test_bits_cap_infeasible_memory_names_field_and_value() -> None:
    # Prepare
    budget = Budget(memory_bytes=_memory(4) - 1)
    # Execute / Assert
    with pytest.raises(BudgetError, match=rf"'memory_bytes' = {_memory(4) - 1}.*4 bits need"):
        bits_cap(PROFILES, budget, WORK, (4, 12))


def test_bits_cap_infeasible_energy_names_field() -> None:
    # Prepare
    budget = Budget(memory_bytes=10**9, energy_j=1e-12)
    # Execute / Assert
    with pytest.raises(BudgetError, match=r"'energy_j' = 1e-12"):
        bits_cap(PROFILES, budget, WORK, (4, 12))


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"memory_bytes": 0}, "memory_bytes"),
        ({"memory_bytes": 1000, "energy_j": -1.0}, "energy_j"),
        ({"memory_bytes": 1000, "energy_j": float("nan")}, "energy_j"),
        ({"memory_bytes": 1000, "watts": 3}, "watts"),
        ({"energy_j": 1.0}, "memory_bytes"),
    ],
)
def test_budget_from_dict_rejects_bad_fields(values: dict[str, object], field: str) -> None:
    # Execute / Assert
    with pytest.raises(BudgetError, match=f"'{field}'"):
        Budget.from_dict(values)


def test_budget_round_trips_through_dict() -> None:
    # Prepare
    budget = Budget(memory_bytes=123_456, energy_j=0.25)
    # Execute / Assert
    assert Budget.from_dict(budget.to_dict()) == budget
    assert Budget(99).to_dict() == {"memory_bytes": 99}


def test_class_caps_respect_each_class_range_and_fold_into_overrides() -> None:
    # Prepare: "mcu" may not go below 6 bits; "phone" keeps the fleet range
    policy = PrecisionPolicy(bits_min=4, bits_max=12)
    overrides = {"mcu": {"bits_min": 6}, "gateway": {"rounding": "stochastic"}}
    budgets = {"mcu": Budget(_memory(7)), "phone": Budget(_memory(8))}
    # Execute
    caps = class_caps(PROFILES, policy, overrides, budgets, WORK)
    folded = capped_overrides(overrides, caps)
    # Assert
    assert caps == {"mcu": 7, "phone": 8}
    assert folded == {
        "mcu": {"bits_min": 6, "bits_max": 7},
        "phone": {"bits_max": 8},
        "gateway": {"rounding": "stochastic"},
    }


def test_class_caps_infeasible_class_is_named() -> None:
    # Prepare: 5 bits fit, but the class's own bits_min is 6
    policy = PrecisionPolicy()
    budgets = {"mcu": Budget(_memory(5))}
    # Execute / Assert
    with pytest.raises(BudgetError, match=r"Device class 'mcu'.*'memory_bytes'"):
        class_caps(PROFILES, policy, {"mcu": {"bits_min": 6}}, budgets, WORK)
