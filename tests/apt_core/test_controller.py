"""Tests of the Gavg-threshold precision controller (apt_core.controller)."""

from __future__ import annotations

import math

import pytest

from apt_core.config import PrecisionPolicy, fixed_policy
from apt_core.controller import PrecisionCheck, PrecisionController
from apt_core.optimizer import LayerStepStats

POLICY = PrecisionPolicy(t_min=0.5, t_max=2.0, bits_min=4, bits_max=12, check_every=3)


def _feed(
    ctrl: PrecisionController, per_step: list[dict[str, float]], underflow: float = 0.25
) -> None:
    """Observe one optimizer step per dict of layer name -> Gavg."""
    for step in per_step:
        ctrl.observe({n: LayerStepStats(gavg=g, underflow=underflow) for n, g in step.items()})


@pytest.mark.parametrize(
    ("gavgs", "bits", "expected"),
    [
        ([0.1, 0.2, 0.3], 8, 9),  # mean 0.2 < t_min -> one more bit
        ([3.0, 2.5, 4.0], 8, 7),  # mean 3.17 > t_max -> one less bit
        ([0.5, 1.0, 2.0], 8, 8),  # mean 1.17 inside [t_min, t_max] -> unchanged
        ([0.4, 0.5, 0.6], 8, 8),  # mean exactly t_min is inside the band
        ([2.0, 2.0, 2.0], 8, 8),  # mean exactly t_max is inside the band
        ([0.1, 0.1, 0.1], 12, 12),  # clamped at bits_max
        ([9.0, 9.0, 9.0], 4, 4),  # clamped at bits_min
    ],
)
def test_controller_decide_moves_bits_by_gavg_band(
    gavgs: list[float], bits: int, expected: int
) -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    _feed(ctrl, [{"fc": g} for g in gavgs])

    # Execute
    new = ctrl.decide(step=3, layers={"fc": (bits, 7)})

    # Assert
    assert new == {"fc": expected}


def test_controller_decide_handles_layers_independently() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    _feed(ctrl, [{"a": 0.1, "b": 5.0, "c": 1.0}] * 3)

    # Execute
    new = ctrl.decide(step=3, layers={"a": (6, 5), "b": (6, 5), "c": (6, 5)})

    # Assert
    assert new == {"a": 7, "b": 5, "c": 6}


def test_controller_due_only_after_check_every_steps() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    seen = []

    # Execute
    for _ in range(3):
        seen.append(ctrl.due())
        _feed(ctrl, [{"fc": 1.0}])
    seen.append(ctrl.due())
    ctrl.decide(step=3, layers={"fc": (8, 7)})
    seen.append(ctrl.due())

    # Assert: not due at 0, 1, 2 observed steps; due at 3; the window resets on decide
    assert seen == [False, False, False, True, False]


def test_controller_due_counts_steps_without_stats() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)

    # Execute
    for _ in range(3):
        ctrl.observe({})

    # Assert
    assert ctrl.due()


def test_controller_observe_ignores_skipped_stats() -> None:
    # Prepare: the skipped steps would pull the mean far above t_max
    ctrl = PrecisionController(POLICY)
    ctrl.observe({"fc": LayerStepStats(gavg=0.1, underflow=0.9)})
    ctrl.observe({"fc": LayerStepStats(gavg=100.0, underflow=0.0, skipped=True)})
    ctrl.observe({"fc": LayerStepStats(gavg=100.0, underflow=0.0, skipped=True)})

    # Execute
    new = ctrl.decide(step=3, layers={"fc": (8, 7)})

    # Assert
    assert new == {"fc": 9}
    assert ctrl.history[-1].gavg == pytest.approx(0.1)
    assert ctrl.history[-1].underflow == pytest.approx(0.9)


def test_controller_layer_with_only_skipped_stats_keeps_bits() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    for _ in range(3):
        ctrl.observe({"fc": LayerStepStats(gavg=0.0, underflow=0.0, skipped=True)})

    # Execute
    new = ctrl.decide(step=3, layers={"fc": (8, 7)})

    # Assert
    assert new == {"fc": 8}
    assert math.isnan(ctrl.history[-1].gavg) and math.isnan(ctrl.history[-1].underflow)


def test_controller_history_records_each_check() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    _feed(ctrl, [{"up": 0.2, "down": 3.0, "same": 1.0}] * 3, underflow=0.4)

    # Execute
    ctrl.decide(step=30, layers={"up": (8, 9), "down": (8, 9), "same": (8, 9)})

    # Assert: the exponent moves with the bits (set_bits keeps the range fixed)
    assert ctrl.history == [
        PrecisionCheck(30, "up", 8, 9, 10, pytest.approx(0.2), pytest.approx(0.4)),
        PrecisionCheck(30, "down", 8, 7, 8, pytest.approx(3.0), pytest.approx(0.4)),
        PrecisionCheck(30, "same", 8, 8, 9, pytest.approx(1.0), pytest.approx(0.4)),
    ]
    assert ctrl.history[0].to_dict() == {
        "step": 30,
        "layer": "up",
        "old_bits": 8,
        "bits": 9,
        "exponent": 10,
        "gavg": pytest.approx(0.2),
        "underflow": pytest.approx(0.4),
    }


def test_controller_decide_resets_the_window() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    _feed(ctrl, [{"fc": 0.1}] * 3)
    ctrl.decide(step=3, layers={"fc": (8, 7)})
    _feed(ctrl, [{"fc": 1.0}] * 3)

    # Execute
    new = ctrl.decide(step=6, layers={"fc": (9, 8)})

    # Assert: the second window averages only its own Gavg of 1.0
    assert new == {"fc": 9}
    assert ctrl.history[-1].gavg == pytest.approx(1.0)


@pytest.mark.parametrize("gavg", [0.01, 1.0, 100.0])
def test_controller_non_adaptive_policy_never_changes_bits(gavg: float) -> None:
    # Prepare
    ctrl = PrecisionController(fixed_policy(8).with_(check_every=3))
    _feed(ctrl, [{"fc": gavg}] * 3)

    # Execute
    new = ctrl.decide(step=3, layers={"fc": (8, 7)})

    # Assert
    assert new == {"fc": 8}
    assert ctrl.history[-1].bits == ctrl.history[-1].old_bits == 8


def test_controller_clamp_after_set_policy() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    bits = {"a": 3, "b": 6, "c": 12}

    # Execute
    before = ctrl.clamp(bits)
    ctrl.set_policy(POLICY.with_(bits_min=5, bits_max=8))
    after = ctrl.clamp(bits)

    # Assert
    assert before == {"a": 4, "b": 6, "c": 12}
    assert after == {"a": 5, "b": 6, "c": 8}
    assert ctrl.policy.bits_max == 8


def test_controller_decide_uses_new_policy_after_set_policy() -> None:
    # Prepare
    ctrl = PrecisionController(POLICY)
    _feed(ctrl, [{"fc": 0.1}] * 3)
    ctrl.set_policy(POLICY.with_(bits_max=8))

    # Execute
    new = ctrl.decide(step=3, layers={"fc": (8, 7)})

    # Assert
    assert new == {"fc": 8}
