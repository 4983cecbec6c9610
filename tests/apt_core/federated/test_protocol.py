"""Federated APT primitives: aggregation rule, reply validation, local rounds, wire config."""

from __future__ import annotations

import pytest
import torch

from apt_core import federated as fed
from apt_core.config import PolicyError, PrecisionPolicy
from apt_core.conversion import apt_layers
from apt_core.packing import PackedTensor, pack_tensors
from apt_core.quant import MAX_EXPONENT, choose_exponent, dequantize, quantize
from apt_core.tasks.data import load_task
from apt_core.tasks.partition import client_split
from apt_core.wire import model_tensors, pack

POLICY = PrecisionPolicy(bits_min=4, bits_max=12, check_every=3)


def _model(seed: int, bits: int | None = None) -> torch.nn.Module:
    model = fed.make_model("digits", "mlp", "apt", POLICY, seed=seed)
    if bits is not None:
        for layer in apt_layers(model).values():
            layer.set_bits(bits)
    return model


@pytest.fixture(scope="module")
def partition() -> torch.utils.data.Dataset:
    train, _ = client_split(load_task("digits"), 0, 4, None, 0)
    return train


def test_aggregate_uses_max_bits_and_exponent_of_average() -> None:
    # Prepare
    a, b = model_tensors(_model(1, 5)), model_tensors(_model(2, 11))

    # Execute
    out = fed.aggregate(_model(0), [(a, 1), (b, 3)])

    # Assert
    for ta, tb, got in zip(a, b, out, strict=True):
        ref = (
            dequantize(ta.codes, ta.exponent, torch.float64) * 0.25
            + dequantize(tb.codes, tb.exponent, torch.float64) * 0.75
        )
        f = choose_exponent(float(ref.abs().max()), 11)
        assert (got.name, got.bits, got.exponent) == (ta.name, 11, f)
        torch.testing.assert_close(got.codes, quantize(ref, 11, f))


def test_aggregate_tiny_average_exponent_capped() -> None:
    # Prepare: replies whose exponents (124, 125) lie above the cap
    tensors = [
        PackedTensor(t.name, t.codes, t.bits, t.exponent + 115) for t in model_tensors(_model(1, 8))
    ]

    # Execute
    out = fed.aggregate(_model(0), [(tensors, 1), (tensors, 1)])

    # Assert: the global grid stays at the cap, codes nearest on it
    for t, got in zip(tensors, out, strict=True):
        ref = dequantize(t.codes, t.exponent, torch.float64)
        f = min(choose_exponent(float(ref.abs().max()), 8), MAX_EXPONENT)
        assert got.exponent == f == MAX_EXPONENT
        torch.testing.assert_close(got.codes, quantize(ref, 8, f))


def test_aggregate_fp32_is_weighted_average() -> None:
    # Prepare
    s1 = fed.float_state(fed.make_model("digits", "mlp", "fp32", seed=1))
    s2 = fed.float_state(fed.make_model("digits", "mlp", "fp32", seed=2))

    # Execute
    out = fed.aggregate(fed.make_model("digits", "mlp", "fp32"), [(s1, 2), (s2, 6)])

    # Assert
    assert isinstance(out, dict)
    for k in s1:
        torch.testing.assert_close(out[k], 0.25 * s1[k] + 0.75 * s2[k])


def test_aggregate_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fed.aggregate(_model(0), [])


def test_validate_packed_accepts_own_payload() -> None:
    # Prepare
    model = _model(1, 9)

    # Execute
    tensors = fed.validate_packed(_model(0), pack(model), POLICY)

    # Assert
    assert [t.bits for t in tensors] == [9] * 6


@pytest.mark.parametrize(
    ("payload_fn", "match"),
    [
        (lambda p: p[:-5], "truncated"),
        (lambda p: p + b"\0", "trailing"),
        (lambda p: b"XXXX" + p[4:], "magic"),
    ],
)
def test_validate_packed_rejects_malformed(payload_fn, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(fed.ReplyError, match=match):
        fed.validate_packed(_model(0), payload_fn(pack(_model(1))), POLICY)


def test_validate_packed_rejects_bits_outside_policy() -> None:
    with pytest.raises(fed.ReplyError, match=r"bits=13, outside .*\[4, 12\]"):
        fed.validate_packed(_model(0), pack(_model(1, 13)), POLICY)


def test_validate_packed_rejects_wrong_shape_and_names() -> None:
    # Prepare
    other = fed.make_model("mnist1d", "mlp", "apt", POLICY, seed=0)
    renamed = [
        PackedTensor("x" + t.name, t.codes, t.bits, t.exponent) for t in model_tensors(_model(1))
    ]

    # Execute / Assert
    with pytest.raises(fed.ReplyError, match="shape"):
        fed.validate_packed(_model(0), pack(other), POLICY)
    with pytest.raises(fed.ReplyError, match="expected"):
        fed.validate_packed(_model(0), pack_tensors(renamed), POLICY)


def test_validate_packed_rejects_non_finite_and_mixed_layer_bits() -> None:
    # Prepare
    tensors = model_tensors(_model(1, 8))
    huge = [
        PackedTensor(t.name, t.codes, t.bits, -200 if i == 0 else t.exponent)
        for i, t in enumerate(tensors)
    ]
    mixed = [
        PackedTensor(t.name, t.codes, 9 if i == 1 else t.bits, t.exponent)
        for i, t in enumerate(tensors)
    ]

    # Execute / Assert
    with pytest.raises(fed.ReplyError, match="non-finite"):
        fed.validate_packed(_model(0), pack_tensors(huge), POLICY)
    with pytest.raises(fed.ReplyError, match="two bit-widths"):
        fed.validate_packed(_model(0), pack_tensors(mixed), POLICY)


def test_validate_state_rejects_nan_inf_and_missing() -> None:
    # Prepare
    template = fed.make_model("digits", "mlp", "fp32")
    good = fed.float_state(template)
    nan = {**good, "fc1.bias": torch.full_like(good["fc1.bias"], float("inf"))}
    missing = {k: v for k, v in good.items() if k != "fc3.bias"}

    # Execute / Assert
    assert set(fed.validate_state(template, good)) == set(good)
    with pytest.raises(fed.ReplyError, match="NaN or Inf"):
        fed.validate_state(template, nan)
    with pytest.raises(fed.ReplyError, match="missing"):
        fed.validate_state(template, missing)


def test_local_round_keeps_remembered_bits(partition) -> None:  # type: ignore[no-untyped-def]
    # Prepare
    frozen = POLICY.with_(adaptive=False)
    model = _model(1, 8)
    remembered = {"fc1": 6, "fc2": 10, "fc3": 15}  # 15 is clamped to bits_max 12

    # Execute
    res = fed.local_round(
        model,
        partition,
        method="apt",
        policy=frozen,
        device_bits=remembered,
        epochs=1,
        lr=0.05,
        batch_size=64,
    )

    # Assert
    assert res.bits == {"fc1": 6, "fc2": 10, "fc3": 12}
    assert res.payload is not None and res.uplink_bytes == len(res.payload)
    assert [t.bits for t in fed.validate_packed(_model(0), res.payload, frozen)] == [
        6,
        6,
        10,
        10,
        12,
        12,
    ]
    assert res.num_examples == len(partition) and res.energy_j > 0
    assert res.peak_memory_bytes > res.param_bytes > 0


def test_local_round_records_history_and_closes_window(partition) -> None:  # type: ignore[no-untyped-def]
    # Prepare
    model = _model(1, 8)
    policy = POLICY.with_(check_every=1000)  # longer than the round: only the closing check

    # Execute
    res = fed.local_round(
        model,
        partition,
        method="apt",
        policy=policy,
        device_bits=None,
        epochs=1,
        lr=0.05,
        batch_size=64,
    )

    # Assert
    assert len(res.history) == 3  # one closing check per layer
    assert {h["step"] for h in res.history} == {res.steps}
    assert res.bits == {h["layer"]: h["bits"] for h in res.history}
    assert all(4 <= b <= 12 for b in res.bits.values())


def test_local_round_fp32_returns_state(partition) -> None:  # type: ignore[no-untyped-def]
    # Prepare
    model = fed.make_model("digits", "mlp", "fp32", seed=0)

    # Execute
    res = fed.local_round(
        model,
        partition,
        method="fp32",
        policy=None,
        device_bits=None,
        epochs=1,
        lr=0.05,
        batch_size=64,
    )

    # Assert
    assert res.payload is None and res.state is not None and res.bits == {}
    assert res.uplink_bytes == sum(v.numel() * 4 for v in res.state.values())


def test_policy_config_roundtrip_and_effective_policy() -> None:
    # Prepare
    overrides = {"mcu.small": {"bits_max": 8, "rounding": "stochastic"}}

    # Execute
    cfg = fed.policy_to_config(4, POLICY, overrides)
    version, policy, back = fed.policy_from_config(cfg)

    # Assert
    assert (version, policy, back) == (4, POLICY, overrides)
    eff = fed.effective_policy(policy, back, "mcu.small")
    assert (eff.bits_max, eff.rounding, eff.bits_min) == (8, "stochastic", 4)
    assert fed.effective_policy(policy, back, "standard") is policy
    assert all(isinstance(v, int | float | str | bool) for v in cfg.values())


def test_run_settings_roundtrip_and_validation() -> None:
    # Prepare
    s = fed.RunSettings(task="mnist1d", arch="mlp", method="fp32", alpha=None, seed=7)

    # Execute / Assert
    assert fed.RunSettings.from_config(s.to_config()) == s
    with pytest.raises(ValueError, match="method='fixed8'"):
        fed.RunSettings(method="fixed8")


def test_local_round_qat8_sends_float_master_only(partition) -> None:  # type: ignore[no-untyped-def]
    # Prepare
    template = fed.make_model("digits", "mlp", "qat8")
    model = fed.make_model("digits", "mlp", "qat8", seed=0)

    # Execute
    res = fed.local_round(
        model,
        partition,
        method="qat8",
        policy=None,
        device_bits=None,
        epochs=1,
        lr=0.05,
        batch_size=64,
    )
    state = fed.validate_state(template, res.state or {})
    acc, loss = fed.evaluate_model(
        fed.load_arrays(template, {k: v.numpy() for k, v in state.items()}, "qat8"),
        partition,
        "qat8",
    )

    # Assert
    assert set(state) == set(fed.float_state(template))
    assert 0.0 <= acc <= 1.0 and loss > 0


def test_effective_policy_unknown_override_field_names_field_and_class() -> None:
    # Prepare
    overrides = {"mcu": {"bits_maxx": 8}}

    # Execute / Assert: a PolicyError naming both, not a TypeError from dataclasses
    with pytest.raises(PolicyError, match="'bits_maxx'.*'mcu'"):
        fed.effective_policy(PrecisionPolicy(), overrides, "mcu")
