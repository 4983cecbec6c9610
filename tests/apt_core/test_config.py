"""Tests of the validated precision policy (apt_core.config)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from apt_core.config import (
    NAMED_POLICIES,
    PolicyError,
    PrecisionPolicy,
    fixed_policy,
    resolve_policy,
)


def test_precision_policy_t_max_defaults_to_four_times_t_min() -> None:
    # Execute
    policy = PrecisionPolicy(t_min=0.3)
    default = PrecisionPolicy()

    # Assert
    assert policy.t_max == pytest.approx(1.2)
    assert default.t_max == pytest.approx(4 * default.t_min)
    assert default.bits_min <= default.start_bits <= default.bits_max


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"t_min": 1.0, "t_max": 1.5}, "t_max", "1.5"),  # t_max < 2 * t_min
        ({"bits_min": 10, "bits_max": 8}, "bits_min", "10"),
        ({"t_min": 0.0}, "t_min", "0.0"),
        ({"t_min": -0.5}, "t_min", "-0.5"),
        ({"t_min": float("nan")}, "t_min", "nan"),
        ({"t_max": float("inf")}, "t_max", "inf"),
        ({"check_every": 0}, "check_every", "0"),
        ({"check_every": 2.5}, "check_every", "2.5"),
        ({"rounding": "up"}, "rounding", "'up'"),
        ({"bits_max": 17}, "bits_max", "17"),
        ({"bits_min": 1}, "bits_min", "1"),
        ({"bits_init": 20}, "bits_init", "20"),
        ({"act_bits": 0}, "act_bits", "0"),
        ({"err_bits": 32}, "err_bits", "32"),
        ({"bits_max": True}, "bits_max", "True"),
        ({"adaptive": "yes"}, "adaptive", "'yes'"),
    ],
)
def test_precision_policy_invalid_field_raises_policy_error(
    kwargs: dict[str, Any], field: str, value: str
) -> None:
    # Execute
    with pytest.raises(PolicyError) as info:
        PrecisionPolicy(**kwargs)

    # Assert: the message names the field and the offending value
    message = str(info.value)
    assert f"field '{field}' = {value}:" in message
    assert isinstance(info.value, ValueError)


def test_precision_policy_t_max_exactly_twice_t_min_is_valid() -> None:
    # Execute
    policy = PrecisionPolicy(t_min=1.0, t_max=2.0)

    # Assert
    assert policy.t_max == 2.0


def test_precision_policy_is_frozen() -> None:
    # Prepare
    policy = PrecisionPolicy()

    # Execute / Assert
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.bits_max = 8  # type: ignore[misc]


def test_precision_policy_start_bits_clamped_into_range() -> None:
    # Execute
    low = PrecisionPolicy(bits_min=10, bits_max=12, bits_init=8)
    high = PrecisionPolicy(bits_min=4, bits_max=6, bits_init=8)

    # Assert
    assert (low.start_bits, high.start_bits) == (10, 6)


def test_precision_policy_with_recomputes_default_t_max() -> None:
    # Prepare
    policy = PrecisionPolicy()

    # Execute
    changed = policy.with_(t_min=1.5)

    # Assert
    assert changed.t_max == 6.0
    with pytest.raises(PolicyError, match="field 'check_every' = -1"):
        policy.with_(check_every=-1)


def test_precision_policy_dict_round_trip() -> None:
    # Prepare
    policy = PrecisionPolicy(t_min=0.25, bits_max=10, rounding="stochastic")

    # Execute
    back = PrecisionPolicy.from_dict(policy.to_dict())

    # Assert
    assert back == policy


def test_precision_policy_from_dict_rejects_unknown_keys() -> None:
    # Execute / Assert
    with pytest.raises(PolicyError, match="unknown field 'tmin'"):
        PrecisionPolicy.from_dict({"tmin": 0.5, "bits_max": 8})


def test_fixed_policy_freezes_bits() -> None:
    # Execute
    policy = fixed_policy(12)

    # Assert
    assert (policy.bits_min, policy.bits_max, policy.start_bits) == (12, 12, 12)
    assert not policy.adaptive


@pytest.mark.parametrize("name", sorted(NAMED_POLICIES))
def test_resolve_policy_by_name(name: str) -> None:
    # Execute / Assert
    assert resolve_policy(name) is NAMED_POLICIES[name]


def test_resolve_policy_key_value_list() -> None:
    # Execute
    policy = resolve_policy(
        "t_min=1.0, bits_max=12,rounding=stochastic,adaptive=false,check_every=10"
    )

    # Assert
    assert policy == PrecisionPolicy(
        t_min=1.0, t_max=4.0, bits_max=12, rounding="stochastic", adaptive=False, check_every=10
    )


def test_resolve_policy_explicit_t_max_kept() -> None:
    # Execute
    policy = resolve_policy("t_min=1.0,t_max=3")

    # Assert
    assert (policy.t_min, policy.t_max) == (1.0, 3.0)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("turbo", "name 'turbo' is not one of"),
        ("bits_cap=8", "unknown field 'bits_cap'"),
        ("bits_max=eight", "field 'bits_max' = 'eight': not a number"),
        ("bits_max=20", "field 'bits_max' = 20"),
        ("t_min=1,t_max=1.5", "field 't_max' = 1.5"),
    ],
)
def test_resolve_policy_invalid_spec_raises_policy_error(spec: str, match: str) -> None:
    # Execute / Assert
    with pytest.raises(PolicyError, match=match):
        resolve_policy(spec)
