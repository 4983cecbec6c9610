"""The native kernels (c_update.py, c_elementwise.py) against the torch kernels: bit for bit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from apt_core import APTSGD
from apt_core.kernels import compiled, native, native_update
from apt_core.kernels import gemm as G
from apt_core.kernels import update as K
from apt_core.kernels.fused_sgd import _params
from apt_core.kernels.storage import encode
from apt_core.quant import code_range
from tests.utils.backends import (
    eager_kernels,
    fixed_policy_at,
    make_all_layers_net,
    make_batch,
    twin_models,
)

if shutil.which("cc") is None and shutil.which("gcc") is None:
    pytest.skip("no C compiler here: the native kernels cannot be built", allow_module_level=True)


def test_the_native_kernels_build_here() -> None:
    # with a compiler on PATH a build failure is a bug, not a reason to skip
    assert native.lib() is not None, native.status()


def _int_optimizers(a: torch.nn.Module, b: torch.nn.Module) -> tuple[APTSGD, APTSGD]:
    kw = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "rounding": "stochastic", "seed": 3}
    return APTSGD(a, backend="int", **kw), APTSGD(b, backend="int", **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _eager() -> Iterator[None]:
    with eager_kernels():
        yield


def _stored(n: int, bits: int, gen: torch.Generator) -> tuple[torch.Tensor, bool]:
    lo, hi = code_range(bits)
    codes = torch.randint(lo, hi + 1, (n,), generator=gen, dtype=torch.int32)
    limbs = bits > 8
    stored = encode(codes.view(1, -1), bits)
    return (stored.view(2, -1) if limbs else stored.view(-1)), limbs


def _pass_args(bits: int, n: int, grad_dtype: torch.dtype, seed: int = 0):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    stored, limbs = _stored(n, bits, gen)
    g = torch.randint(-(2**20), 2**20, (n,), generator=gen, dtype=torch.int32)
    if grad_dtype == torch.float32:
        g = g.to(torch.float32) * 0.37
    g[:7] = 0  # some updates underflow
    mom = torch.randint(-127, 128, (n,), generator=gen, dtype=torch.int8)
    keys = torch.tensor([11, -5, 2**30, -(2**31)], dtype=torch.int32)
    f = bits - 2
    p = _params(26, f, 0.05, 0.9, 1e-2, 7, (bits, f, 7))
    return stored, g, mom, p, keys, torch.tensor(12345, dtype=torch.int32), limbs


@pytest.mark.parametrize("grad_dtype", [torch.int32, torch.float32])
@pytest.mark.parametrize("flags", [(1, 1, 1), (0, 0, 0), (1, 0, 1), (0, 1, 0)])
@pytest.mark.parametrize("bits", [2, 8, 9, 16])
def test_one_pass_matches_torch(bits: int, flags: tuple[int, int, int], grad_dtype) -> None:  # type: ignore[no-untyped-def]
    # Prepare: 1000 elements (not a multiple of the kernel's lanes), every flag
    stored, g, mom, p, keys, base, limbs = _pass_args(bits, 1000, grad_dtype)
    args = (stored, g, mom, p, keys, base, limbs, *map(bool, flags))

    # Execute
    want = K.one_pass(*args)
    got = native_update.one_pass(*args)

    # Assert: codes, momentum and counts exact; the float64 sum up to its order
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[3].tolist() == want[3].tolist()
    assert got[2][1:].tolist() == want[2][1:].tolist()
    assert got[2][0].item() == pytest.approx(want[2][0].item(), rel=1e-9)


@pytest.mark.parametrize("skip", [0.0, 1.0])
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("bits", [4, 8, 12])
def test_write_pass_matches_torch(bits: int, keep: bool, skip: float) -> None:
    # Prepare: a shifted grid (the overflow redo) and the skip flag of a non-finite layer
    stored, g, mom, p, keys, base, limbs = _pass_args(bits, 777, torch.int32, seed=1)
    p[K.F_SCALE], p[K.SKIP] = p[K.F_SCALE] / 2, skip
    args = (stored, g, mom, p, keys, base, limbs, True, True, True, keep)

    # Execute
    want = K.write_pass(*args)
    got = native_update.write_pass(*args)

    # Assert
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert int(got[2]) == int(want[2])


def test_one_pass_nonfinite_gradient_reports_nan_like_torch() -> None:
    # Prepare
    stored, g, mom, p, keys, base, limbs = _pass_args(8, 300, torch.float32)
    g[17] = float("nan")
    args = (stored, g, mom, p, keys, base, limbs, True, True, True)

    # Execute
    want, got = K.one_pass(*args)[2], native_update.one_pass(*args)[2]

    # Assert: the sum and both maxima that see the NaN are NaN; max|prev| is not
    assert [v != v for v in got.tolist()] == [v != v for v in want.tolist()]
    assert [v != v for v in got.tolist()] == [True, True, True, False]


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_quantize_and_amax_match_torch(bits: int) -> None:
    # Prepare: values on both sides of every rounding tie
    x = torch.arange(-1000, 1000, dtype=torch.float32) / 64
    x = torch.cat((x, torch.randn(997) * 3))

    # Execute
    got = G.quantize_codes(x, bits)
    native.set_native(False)
    try:
        want = G.quantize_codes(x, bits)
    finally:
        native.set_native(True)

    # Assert
    assert got is not None and want is not None
    assert got[1] == want[1] and torch.equal(got[0], want[0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_amax_sees_nonfinite_values(bad: float) -> None:
    x = torch.ones(1001)
    x[1000] = bad
    assert not torch.isfinite(torch.tensor(native.amax(x)))
    assert G.quantize_codes(x, 8) is None


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_linear_products_match_torch(bits: int, with_bias: bool) -> None:
    # Prepare: worst-case codes, where the limb recombination rounds in float32
    gen = torch.Generator().manual_seed(bits)
    lo, hi = code_range(bits)
    w = encode(torch.randint(lo, hi + 1, (33, 70), generator=gen, dtype=torch.int32), bits)
    xq = torch.randint(-128, 128, (19, 70), generator=gen, dtype=torch.int8)
    gq = torch.randint(-128, 128, (19, 33), generator=gen, dtype=torch.int8)
    bias = torch.randn(33, generator=gen) if with_bias else None
    limbs, scale = bits > 8, 2.0**-13

    # Execute
    got = (G.linear_forward(xq, w, limbs, scale, bias), G.linear_input_grad(gq, w, limbs, scale))
    native.set_native(False)
    try:
        want = (
            G.linear_forward(xq, w, limbs, scale, bias),
            G.linear_input_grad(gq, w, limbs, scale),
        )
    finally:
        native.set_native(True)

    # Assert
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rescale_broadcasts_a_channel_bias_like_torch() -> None:
    # Prepare: an NCHW-like accumulator (2, 3, 5) with a bias per channel
    acc = torch.randint(-(2**30), 2**30, (2, 3, 5), dtype=torch.int32)
    bias = torch.randn(3)
    want = compiled.rescale_bias(acc, torch.tensor(2.0**-20), bias.view(3, 1))

    # Execute: acc's storage becomes the result
    got = native.rescale(acc, 2.0**-20, bias, inner=5)

    # Assert
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_relu_and_its_gradient_match_torch() -> None:
    # Prepare
    x = torch.cat((torch.randn(1000), torch.tensor([0.0, -0.0, float("nan"), float("inf")])))
    g = torch.randn(x.shape)

    # Execute
    y, mask = native.relu(x)
    dx = native.relu_grad(g, mask)

    # Assert
    torch.testing.assert_close(y, torch.relu(x), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(mask, (torch.relu(x) != 0).view(torch.uint8))
    torch.testing.assert_close(dx, compiled.relu_grad(g, mask), rtol=0, atol=0)


def _step(model: torch.nn.Module, opt: APTSGD, x: torch.Tensor, y: torch.Tensor) -> float:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def _step_twins_native_off_and_on(a, b, opts, x, y) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """One step of ``a`` with the native kernels off, then of ``b`` with them on."""
    native.set_native(False)
    try:
        ref = _step(a, opts[0], x, y)
    finally:
        native.set_native(True)
    return ref, _step(b, opts[1], x, y)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(ta, tb), na


@pytest.mark.parametrize("lr", [0.1, 20.0])
@pytest.mark.parametrize("bits", [8, 12])
def test_one_native_step_call_matches_the_per_layer_passes(
    bits: int, lr: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: twin all-layers nets; a steps layer by layer (one native pass per tensor,
    # decisions in Python), b in one aptk_step call (decisions in C). lr 20 overflows grids.
    a, b = twin_models(make_all_layers_net(), fixed_policy_at(bits))
    opts = _int_optimizers(a, b)
    for o in opts:
        o.lr = lr
    x, y = make_batch()
    calls = []
    real_step = native_update.step_slots
    monkeypatch.setattr(native_update, "step_slots", lambda *a: calls.append(1) or real_step(*a))
    exps_seen: set[tuple[int, ...]] = set()

    for _ in range(6):
        # Execute
        with monkeypatch.context() as m:
            m.setattr(native_update, "batchable", lambda *_: False)
            opts[0].zero_grad()
            F.cross_entropy(a(x), y).backward()
            ref = opts[0].step()
        opts[1].zero_grad()
        F.cross_entropy(b(x), y).backward()
        out = opts[1].step()

        # Assert: same decisions, statistics, codes, momentum and exponents
        assert out == ref
        _assert_same_state(a, b)
        assert torch.equal(opts[0]._mom, opts[1]._mom)
        assert torch.equal(opts[0]._mom_exp, opts[1]._mom_exp)
        exps_seen.add(tuple(opts[1]._mom_exp.tolist()))
    assert len(calls) == 6
    assert len(exps_seen) > 1  # momentum exponents moved: guesses were wrong, layers redone
    if lr > 1:
        assert sum(opts[1].overflow_shifts.values()) > 0


def test_deferred_weight_gradient_update_matches_torch_kernels() -> None:
    # Prepare: twin MLPs on the integer backend, one with the native kernels off; a wide
    # layer so that its weight gradient is deferred and read in row blocks
    net = torch.nn.Sequential(torch.nn.Linear(600, 512), torch.nn.ReLU(), torch.nn.Linear(512, 4))
    a, b = twin_models(net, fixed_policy_at(8))
    opts = _int_optimizers(a, b)
    x, y = torch.randn(64, 600), torch.randint(0, 4, (64,))

    for _ in range(3):
        # Execute
        ref, out = _step_twins_native_off_and_on(a, b, opts, x, y)

        # Assert
        assert out == ref
        _assert_same_state(a, b)


def test_every_layer_type_trains_the_same_with_native_off() -> None:
    # Prepare: the all-layers net, both models on the integer backend
    a, b = twin_models(make_all_layers_net(), fixed_policy_at(12))
    opts = _int_optimizers(a, b)
    x, y = make_batch()

    # Execute: model a steps with the native kernels off, b with them on
    ref, out = _step_twins_native_off_and_on(a, b, opts, x, y)

    # Assert
    assert out == ref
    _assert_same_state(a, b)


def test_without_a_compiler_the_torch_kernels_run_and_say_so_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Prepare: a fresh process whose compiler does not exist and whose cache is empty
    code = (
        "import logging, torch;"
        "logging.basicConfig(level=logging.WARNING);"
        "from apt_core.kernels import native;"
        "from apt_core.kernels.gemm import quantize_codes;"
        "print(quantize_codes(torch.randn(100), 8)[1] > 0);"
        "print(quantize_codes(torch.randn(100), 8)[1] > 0);"
        "print(native.status())"
    )
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "APT_NATIVE_CACHE": str(tmp_path)}
    env.pop("APT_NATIVE", None)  # enabled, so that the missing compiler is what stops it

    # Execute
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )

    # Assert
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["True", "True"]
    assert res.stdout.split("\n")[2].startswith("unavailable:")
    assert res.stderr.count("native kernels are unavailable") == 1


def test_dense_accepts_any_dimension_order_and_refuses_gaps() -> None:
    t = torch.zeros(2, 3, 4, 5)
    assert native.dense(t)
    assert native.dense(t.contiguous(memory_format=torch.channels_last))
    assert native.dense(t.permute(0, 2, 1, 3))
    assert not native.dense(t[:, :2])
    assert not native.dense(t[..., ::2])


def test_gather_copies_a_strided_im2col_view() -> None:
    # Prepare: the receptive fields of a padded NHWC int8 input, as im2col sees them
    xp = torch.randint(-128, 128, (2, 6, 7, 16), dtype=torch.int8)
    s = xp.stride()
    patches = xp.as_strided((2, 4, 5, 3, 3, 16), (s[0], s[1], s[2], s[1], s[2], s[3]))
    dst = torch.empty(patches.numel(), dtype=torch.int8)

    # Execute
    done = native.gather_into(dst, patches)

    # Assert
    assert done and torch.equal(dst.view(patches.shape), patches)
