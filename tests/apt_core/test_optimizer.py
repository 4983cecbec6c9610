"""Tests of APTSGD, the only writer of APT layer codes (apt_core.optimizer)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from apt_core.conversion import apt_layers, to_apt
from apt_core.layers import APTLayer
from apt_core.optimizer import APTSGD, LayerStepStats
from tests.utils.torch_threads import single_thread

F_EXP = 6  # exponent of the hand-made layers: step 1/64
DELTA = 2.0**-F_EXP


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(seed: int = 0) -> tuple[nn.Module, APTLayer, APTLayer]:
    """Two 8-bit APT linear layers whose codes are set by hand (|code| <= 90, f = 6)."""
    torch.manual_seed(seed)
    model = to_apt(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    gen = torch.Generator().manual_seed(seed)
    for layer in apt_layers(model).values():
        for which in layer.tensors():
            shape = layer.weight_shape if which == "weight" else layer.bias_shape
            codes = torch.randint(-90, 91, shape, generator=gen, dtype=torch.int32)
            layer.store_codes(which, codes, F_EXP)
    layers = apt_layers(model)
    return model, layers["0"], layers["2"]


def _set_grads(model: nn.Module, grads: dict[str, dict[str, Tensor]]) -> None:
    """Decode the float weights as a training forward does, then give them known grads."""
    model.train()
    with torch.enable_grad():
        model(torch.zeros(1, 4))
    for name, layer in apt_layers(model).items():
        for which, g in grads.get(name, {}).items():
            live = layer.live(which)
            assert live is not None
            live.grad = g.clone()


def _random_grads(layer: APTLayer, seed: int, scale: float = 1.0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {"weight": torch.randn(layer.weight_shape, generator=gen).clamp(-2, 2) * scale}
    assert layer.bias_shape is not None
    out["bias"] = torch.randn(layer.bias_shape, generator=gen).clamp(-2, 2) * scale
    return out


def _decoded(layer: APTLayer, which: str = "weight") -> Tensor:
    return layer.codes(which).float() * 2.0 ** -layer.exponent(which)


def _snapshot(layer: APTLayer) -> dict[str, Tensor]:
    return {n: b.clone() for n, b in layer.named_buffers()}


def test_aptsgd_step_writes_quantized_update_matches_reference() -> None:
    # Prepare
    lr = 0.05
    model, first, _ = _model()
    grads = _random_grads(first, seed=1)
    w = {k: _decoded(first, k) for k in ("weight", "bias")}
    opt = APTSGD(model, lr=lr, momentum=0.0, weight_decay=0.0)
    _set_grads(model, {"0": grads})

    # Execute
    stats = opt.step()

    # Assert: Q(w - lr * g) on the unchanged grid (|w - lr*g| stays < 97 steps)
    for which in ("weight", "bias"):
        expected = torch.round((w[which] - lr * grads[which]) * 2.0**F_EXP).to(torch.int32)
        torch.testing.assert_close(first.codes(which), expected, rtol=0, atol=0)
        assert first.exponent(which) == F_EXP
    # stats: Gavg = mean|u| / delta; underflow = share of moved weights whose code stayed
    u = lr * grads["weight"]
    moved = u != 0
    stuck = torch.round((w["weight"] - u) * 2.0**F_EXP) == torch.round(w["weight"] * 2.0**F_EXP)
    assert set(stats) == {"0"}  # the second layer saw no gradient
    s = stats["0"]
    assert not s.skipped and s.overflow_shifts == 0
    assert s.gavg == pytest.approx(float(u.abs().mean()) / DELTA, rel=1e-6)
    assert s.underflow == pytest.approx(float((stuck & moved).sum()) / float(moved.sum()))


def test_aptsgd_step_with_weight_decay_matches_reference() -> None:
    # Prepare
    lr, wd = 0.05, 0.5
    model, first, _ = _model(seed=3)
    grads = _random_grads(first, seed=4)
    w = _decoded(first)
    opt = APTSGD(model, lr=lr, momentum=0.0, weight_decay=wd)
    _set_grads(model, {"0": grads})

    # Execute
    opt.step()

    # Assert
    expected = torch.round((w - lr * (grads["weight"] + wd * w)) * 2.0**F_EXP)
    torch.testing.assert_close(first.codes(), expected.to(torch.int32), rtol=0, atol=0)


def test_aptsgd_fp32_momentum_matches_reference_over_two_steps() -> None:
    # Prepare
    lr, mu = 0.02, 0.9
    model, first, _ = _model(seed=5)
    g1, g2 = _random_grads(first, seed=6), _random_grads(first, seed=7)
    opt = APTSGD(model, lr=lr, momentum=mu, momentum_format="fp32")

    # Execute
    _set_grads(model, {"0": g1})
    opt.step()
    w1 = _decoded(first)
    _set_grads(model, {"0": g2})
    opt.step()

    # Assert: the second update uses d = mu * g1 + g2
    d2 = g1["weight"] * mu + g2["weight"]
    expected = torch.round((w1 - lr * d2) * 2.0**F_EXP).to(torch.int32)
    torch.testing.assert_close(first.codes(), expected, rtol=0, atol=0)


def test_aptsgd_step_update_below_half_step_leaves_codes_unchanged() -> None:
    # Prepare: |lr * g| < delta / 2 everywhere, and never exactly zero
    lr = 1.0
    model, first, _ = _model()
    gen = torch.Generator().manual_seed(8)
    sign = torch.where(torch.rand(first.weight_shape, generator=gen) < 0.5, -1.0, 1.0)
    g = sign * (0.05 + 0.4 * torch.rand(first.weight_shape, generator=gen)) * DELTA
    before = _snapshot(first)
    opt = APTSGD(model, lr=lr, momentum=0.0)
    _set_grads(model, {"0": {"weight": g, "bias": torch.zeros(3)}})

    # Execute
    stats = opt.step()

    # Assert
    for name, buf in _snapshot(first).items():
        assert torch.equal(buf, before[name]), name
    assert stats["0"].underflow == 1.0
    assert stats["0"].gavg < 0.5
    assert stats["0"].gavg == pytest.approx(float(g.abs().mean()) / DELTA, rel=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("which", ["weight", "bias"])
def test_aptsgd_step_nonfinite_gradient_skips_layer(bad: float, which: str) -> None:
    # Prepare
    model, first, second = _model()
    grads = _random_grads(first, seed=9)
    grads[which].view(-1)[1] = bad
    before_first, before_second = _snapshot(first), _snapshot(second)
    opt = APTSGD(model, lr=0.05, momentum=0.0)
    _set_grads(model, {"0": grads, "2": _random_grads(second, seed=10)})

    # Execute
    stats = opt.step()

    # Assert: the bad layer is bit-identical and counted, the other one still trains
    for name, buf in _snapshot(first).items():
        assert torch.equal(buf, before_first[name]), name
    assert opt.nonfinite_skips == {"0": 1, "2": 0}
    assert stats["0"] == LayerStepStats(gavg=0.0, underflow=0.0, skipped=True)
    assert not stats["2"].skipped
    assert not torch.equal(second.weight_codes, before_second["weight_codes"])
    assert first.live("weight") is None and first.live("bias") is None


def test_aptsgd_step_nonfinite_update_skips_layer() -> None:
    # Prepare: g is finite but lr * g = inf in float32
    model, first, _ = _model()
    before = _snapshot(first)
    opt = APTSGD(model, lr=10.0, momentum=0.0)
    _set_grads(model, {"0": {"weight": torch.full((3, 4), 1e38), "bias": torch.zeros(3)}})

    # Execute
    stats = opt.step()

    # Assert
    assert stats["0"].skipped
    for name, buf in _snapshot(first).items():
        assert torch.equal(buf, before[name]), name


@pytest.mark.parametrize(("push", "shifts"), [(140, 1), (300, 2), (1000, 3)])
def test_aptsgd_step_overflow_lowers_exponent_instead_of_clipping(push: int, shifts: int) -> None:
    # Prepare: one weight is pushed to `push` steps, beyond the 8-bit maximum of 127
    lr = 1.0
    model, first, _ = _model()
    w = _decoded(first)
    g = torch.zeros(first.weight_shape)
    g[0, 0] = w[0, 0] - push * DELTA
    opt = APTSGD(model, lr=lr, momentum=0.0)
    _set_grads(model, {"0": {"weight": g, "bias": torch.zeros(3)}})

    # Execute
    stats = opt.step()

    # Assert
    f_new = F_EXP - shifts
    assert first.exponent() == f_new
    assert stats["0"].overflow_shifts == shifts
    assert opt.overflow_shifts == {"0": shifts, "2": 0}
    w_new = w - lr * g
    expected = torch.round(w_new * 2.0**f_new).to(torch.int32)
    torch.testing.assert_close(first.codes(), expected, rtol=0, atol=0)
    assert int(first.codes()[0, 0]) == round(push / 2**shifts) <= 127
    # not clipped: the large weight is represented to within half the new step
    assert abs(float(_decoded(first)[0, 0]) - push * DELTA) <= 2.0**-f_new / 2


@pytest.mark.parametrize(
    ("fmt", "dtype", "bits"),
    [("int8", torch.int8, 8), ("bf16", torch.bfloat16, 16), ("fp32", torch.float32, 32)],
)
def test_aptsgd_momentum_state_dtype_and_bits(fmt: str, dtype: torch.dtype, bits: int) -> None:
    # Prepare
    model, first, second = _model()
    opt = APTSGD(model, lr=0.01, momentum=0.9, momentum_format=fmt)
    _set_grads(model, {"0": _random_grads(first, 11), "2": _random_grads(second, 12)})

    # Execute
    opt.step()
    state = list(opt.state_tensors())

    # Assert: one flat buffer over every weight and bias, plus (int8) one exponent each
    n_params = first.numel_params() + second.numel_params()
    momentum = state[0]
    assert momentum.dtype == dtype and momentum.numel() == n_params
    assert len(state) == (2 if fmt == "int8" else 1)
    if fmt == "int8":
        assert state[1].numel() == 4  # weight and bias of both layers
    assert opt.state_bits_per_param() == bits


def test_aptsgd_int8_momentum_close_to_fp32_momentum() -> None:
    # Prepare: same grads through an int8- and an fp32-momentum optimizer
    lr = 0.02
    runs = {}
    for fmt in ("int8", "fp32"):
        model, first, _ = _model(seed=13)
        opt = APTSGD(model, lr=lr, momentum=0.9, momentum_format=fmt, seed=0)
        for seed in (14, 15, 16):
            _set_grads(model, {"0": _random_grads(first, seed)})
            opt.step()
        runs[fmt] = _decoded(first)

    # Execute
    diff = (runs["int8"] - runs["fp32"]).abs()

    # Assert: int8 momentum errs by < 1/127 of |d| (~5) per step, i.e. far below one code
    # step per update; allow two code steps of drift from rounding differences
    assert float(diff.max()) <= 2 * DELTA


def test_aptsgd_without_momentum_keeps_no_state() -> None:
    # Prepare
    model, first, _ = _model()
    opt = APTSGD(model, lr=0.01, momentum=0.0)
    _set_grads(model, {"0": _random_grads(first, 17)})

    # Execute
    opt.step()

    # Assert
    assert list(opt.state_tensors()) == []
    assert opt.state_bits_per_param() == 0


def test_aptsgd_step_leaves_no_float_weight_behind() -> None:
    # Prepare
    model, first, second = _model()
    opt = APTSGD(model, lr=0.05)
    _set_grads(model, {"0": _random_grads(first, 18), "2": _random_grads(second, 19)})

    # Execute
    opt.step()

    # Assert
    for layer in (first, second):
        assert layer.live("weight") is None and layer.live("bias") is None
        assert not any(b.is_floating_point() for b in layer.buffers())
    assert list(model.parameters()) == []


def test_aptsgd_zero_grad_releases_live_tensors() -> None:
    # Prepare
    model, first, _ = _model()
    opt = APTSGD(model, lr=0.05)
    _set_grads(model, {})

    # Execute
    opt.zero_grad()

    # Assert
    assert first.live("weight") is None


def test_aptsgd_step_without_gradients_returns_no_stats() -> None:
    # Prepare
    model, first, _ = _model()
    before = _snapshot(first)
    opt = APTSGD(model, lr=0.05)

    # Execute
    stats = opt.step()

    # Assert
    assert stats == {}
    for name, buf in _snapshot(first).items():
        assert torch.equal(buf, before[name])


def test_aptsgd_stochastic_rounding_picks_a_neighbouring_code() -> None:
    # Prepare
    lr = 0.05
    model, first, _ = _model()
    grads = _random_grads(first, seed=20)
    w = _decoded(first)
    opt = APTSGD(model, lr=lr, momentum=0.0, rounding="stochastic", seed=3)
    _set_grads(model, {"0": grads})

    # Execute
    opt.step()

    # Assert
    scaled = (w - lr * grads["weight"]) * 2.0**F_EXP
    codes = first.codes().float()
    assert bool(((codes == torch.floor(scaled)) | (codes == torch.ceil(scaled))).all())


def test_aptsgd_trains_float_parameters_outside_apt_layers() -> None:
    # Prepare: a LayerNorm stays float and is trained by the inner torch SGD
    model = to_apt(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)))
    norm = model[1]
    opt = APTSGD(model, lr=0.5, momentum=0.0)
    opt.lr = 0.1  # the trainer changes lr between steps
    model.train()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    (model(x) * torch.tensor([1.0, -2.0, 3.0])).sum().backward()
    assert norm.bias.grad is not None
    expected = norm.bias.detach() - 0.1 * norm.bias.grad

    # Execute
    opt.step()

    # Assert
    torch.testing.assert_close(norm.bias.detach(), expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr=0.0"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum=1.0"),
        ({"lr": 0.1, "momentum_format": "fp8"}, "momentum_format='fp8'"),
        ({"lr": 0.1, "rounding": "up"}, "rounding='up'"),
    ],
)
def test_aptsgd_rejects_invalid_arguments(kwargs: dict[str, object], match: str) -> None:
    # Prepare
    model, _, _ = _model()

    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        APTSGD(model, **kwargs)  # type: ignore[arg-type]
