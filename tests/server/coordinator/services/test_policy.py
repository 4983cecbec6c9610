"""Tests of server.coordinator.services.policy (pure, no database)."""

from __future__ import annotations

import pytest

from apt_core.config import PolicyError, PrecisionPolicy
from server.coordinator.exceptions import PolicyUpdateError
from server.coordinator.schemas import PolicyUpdate
from server.coordinator.services.policy import (
    apply_policy_update,
    effective_policy,
    validate_overrides,
)


def test_effective_policy_applies_class_override() -> None:
    # Prepare
    policy = PrecisionPolicy(t_min=0.5, bits_max=16)
    overrides = {"mcu": {"bits_max": 8}}

    # Execute
    mcu = effective_policy(policy, overrides, "mcu")
    standard = effective_policy(policy, overrides, "standard")

    # Assert
    assert mcu == policy.with_(bits_max=8)
    assert standard is policy


def test_effective_policy_unknown_field_rejected() -> None:
    with pytest.raises(PolicyError, match="unknown field 'bitz'.*'mcu'"):
        effective_policy(PrecisionPolicy(), {"mcu": {"bitz": 8}}, "mcu")


def test_effective_policy_invalid_override_rejected() -> None:
    with pytest.raises(PolicyError, match="'bits_min'"):
        effective_policy(PrecisionPolicy(bits_max=8), {"mcu": {"bits_min": 12}}, "mcu")


def test_apply_policy_update_partial_keeps_other_fields() -> None:
    # Prepare
    current = PrecisionPolicy(bits_max=12, rounding="nearest")

    # Execute
    policy, overrides = apply_policy_update(
        current, {"mcu": {"bits_max": 8}}, PolicyUpdate(t_min=1.0)
    )

    # Assert
    assert policy == current.with_(t_min=1.0)
    assert policy.t_max == pytest.approx(4.0)  # a new t_min without t_max means 4 * t_min
    assert overrides == {"mcu": {"bits_max": 8}}


def test_apply_policy_update_t_max_too_small_names_t_max() -> None:
    with pytest.raises(PolicyUpdateError) as info:
        apply_policy_update(PrecisionPolicy(), {}, PolicyUpdate(t_min=1.0, t_max=1.5))
    assert info.value.loc == ("t_max",)
    assert info.value.value == 1.5


def test_apply_policy_update_bad_override_names_class_and_field() -> None:
    # Prepare
    update = PolicyUpdate(overrides={"mcu": {"bits_max": 99}})

    # Execute
    with pytest.raises(PolicyUpdateError) as info:
        apply_policy_update(PrecisionPolicy(), {}, update)

    # Assert
    assert info.value.loc == ("overrides", "mcu", "bits_max")
    assert "bits_max" in info.value.message


def test_apply_policy_update_revalidates_kept_overrides() -> None:
    # An override valid for the old policy can become invalid for the new one.
    with pytest.raises(PolicyUpdateError) as info:
        apply_policy_update(PrecisionPolicy(), {"mcu": {"bits_max": 8}}, PolicyUpdate(bits_min=10))
    assert info.value.loc == ("overrides", "mcu", "bits_max")


@pytest.mark.parametrize("device_class", ["", "has space", "x" * 33])
def test_validate_overrides_bad_class_name_rejected(device_class: str) -> None:
    with pytest.raises(PolicyUpdateError) as info:
        validate_overrides(PrecisionPolicy(), {device_class: {"bits_max": 8}})
    assert info.value.loc == ("overrides", device_class)
