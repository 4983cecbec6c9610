"""APTSGD on the integer backend (fused passes) against the reference backend.

Twin models start from the same codes and take the same steps on the same batch, one on
each backend. Codes, exponents, bits, int8 momentum and the skip/overflow counters must
be identical; Gavg equal up to the order of its float64 sum (relative 1e-9).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt_core.conversion import apt_layers
from apt_core.wire import pack, unpack
from tests.utils.backends import (
    assert_same_layers,
    assert_same_optimizer_state,
    assert_same_stats,
    compiled_kernels,
    eager_kernels,
    fixed_policy_at,
    make_all_layers_net,
    make_batch,
    twin_models,
    twin_optimizers,
    twin_steps,
)
from tests.utils.torch_threads import single_thread

BITS = list(range(2, 17))


@pytest.fixture(autouse=True, scope="module")
def _one_thread_eager() -> Iterator[None]:
    with single_thread(), eager_kernels():
        yield


def _loss(targets: Tensor, scale: float = 1.0):  # type: ignore[no-untyped-def]
    return lambda out: F.cross_entropy(out, targets) * scale


def _assert_twins(ref: nn.Module, intm: nn.Module, opts, outs, stats) -> None:  # type: ignore
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0, equal_nan=True)
    assert_same_stats(stats[0], stats[1])
    assert_same_layers(ref, intm)
    assert_same_optimizer_state(*opts)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("bits", BITS)
def test_aptsgd_int_steps_match_reference(bits: int, rounding: str) -> None:
    # Prepare: weight decay on at odd widths, off at even ones (both for each rounding);
    # a larger lr below 5 bits so that codes move instead of all underflowing
    wd = 1e-2 if bits % 2 else 0.0
    ref, intm = twin_models(make_all_layers_net(), fixed_policy_at(bits))
    opts = twin_optimizers(
        ref,
        intm,
        lr=0.1 * 2.0 ** max(0, 5 - bits),
        momentum=0.9,
        weight_decay=wd,
        rounding=rounding,
        seed=bits,
    )
    x, y = make_batch()

    for _ in range(3):
        # Execute
        outs, stats = twin_steps(ref, intm, opts, x, _loss(y))

        # Assert
        _assert_twins(ref, intm, opts, outs, stats)
    assert list(opts[1].state_tensors())  # int8 momentum was kept and compared
    for p_ref, p_int in zip(ref.parameters(), intm.parameters(), strict=True):
        torch.testing.assert_close(p_int, p_ref, rtol=0, atol=0)  # the float LayerNorm


@pytest.mark.slow  # inductor compiles ~10 graphs: 60-90 s per width on a loaded 2-core box
@pytest.mark.timeout(900)
@pytest.mark.parametrize("bits", [8, 12])
def test_aptsgd_int_compiled_kernels_match_reference(bits: int) -> None:
    # Prepare: the inductor-compiled quantize/rescale/update kernels (as in production),
    # with every float op the fused passes have: weight decay, momentum, stochastic noise
    ref, intm = twin_models(make_all_layers_net(), fixed_policy_at(bits))
    opts = twin_optimizers(
        ref, intm, lr=0.1, momentum=0.9, weight_decay=1e-2, rounding="stochastic", seed=3
    )
    x, y = make_batch()

    with compiled_kernels(True):
        for _ in range(2):
            # Execute
            outs, stats = twin_steps(ref, intm, opts, x, _loss(y))

            # Assert
            _assert_twins(ref, intm, opts, outs, stats)


@pytest.mark.parametrize(
    ("bits", "lr"), [(2, 5.0), (8, 5.0), (9, 5.0), (16, 5.0), (8, 500.0), (12, 500.0)]
)
def test_aptsgd_int_overflow_shifts_exponent_like_reference(bits: int, lr: float) -> None:
    # Prepare: the largest weight of every layer sits on its top code (to_apt sizes the
    # grid to it) and a large gradient pushes weights past the grid
    ref, intm = twin_models(make_all_layers_net(), fixed_policy_at(bits))
    opts = twin_optimizers(ref, intm, lr=lr, momentum=0.9)
    x, y = make_batch()
    shifts = 0

    for _ in range(2):
        # Execute
        outs, stats = twin_steps(ref, intm, opts, x, _loss(y, scale=10.0))

        # Assert
        _assert_twins(ref, intm, opts, outs, stats)
        shifts += sum(s.overflow_shifts for s in stats[1].values())
    assert shifts >= (2 if lr < 100 else 6)  # the grid really overflowed (lr 500: often)
    assert max(opts[1].overflow_shifts.values()) >= (1 if lr < 100 else 3)


class _TwoHeads(nn.Module):
    """Two linear heads on one input; the loss can poison one head's gradient only."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 3)
        self.b = nn.Conv1d(1, 2, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.a(x), self.b(x.unsqueeze(1)).flatten(1)), dim=1)


@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
@pytest.mark.parametrize("bits", [4, 8, 12])
def test_aptsgd_int_nonfinite_gradient_skips_layer_like_reference(bits: int, poison: float) -> None:
    # Prepare: a finite step (momentum exists), then head a's loss times inf/nan, then finite
    torch.manual_seed(0)
    ref, intm = twin_models(_TwoHeads(), fixed_policy_at(bits))
    opts = twin_optimizers(ref, intm, lr=0.1, momentum=0.9, weight_decay=1e-2)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))

    def finite(out: Tensor) -> Tensor:
        return (out**2).sum()

    def poisoned(out: Tensor) -> Tensor:
        return out[:, :3].sum() * poison + (out[:, 3:] ** 2).sum()

    for step, loss in enumerate((finite, poisoned, finite)):
        # Execute
        outs, stats = twin_steps(ref, intm, opts, x, loss)

        # Assert: only head a skipped, counted once, the rest identical
        _assert_twins(ref, intm, opts, outs, stats)
        assert stats[1]["a"].skipped is (step == 1)
        assert not stats[1]["b"].skipped
    assert opts[1].nonfinite_skips == {"a": 1, "b": 0}


def test_aptsgd_int_nonfinite_input_skips_every_layer_like_reference() -> None:
    # Prepare: one nan in the input makes the first layer fall back and the loss nan
    ref, intm = twin_models(make_all_layers_net(), fixed_policy_at(8))
    opts = twin_optimizers(ref, intm, lr=0.1, momentum=0.9)
    x, y = make_batch()
    x[0, 0, 2, 3] = float("nan")

    # Execute
    outs, stats = twin_steps(ref, intm, opts, x, _loss(y))

    # Assert
    _assert_twins(ref, intm, opts, outs, stats)
    assert all(s.skipped for s in stats[1].values())
    assert apt_layers(intm)["conv2"].fallbacks == 1


@pytest.mark.parametrize(
    ("before", "after"),
    [(8, 9), (9, 8), (2, 3), (3, 2), (15, 16), (16, 15), (4, 12), (12, 4), (7, 10), (10, 7)],
)
def test_aptsgd_int_step_after_set_bits_matches_reference(before: int, after: int) -> None:
    # Prepare: one step at ``before`` bits, then every layer of both twins moves to
    # ``after`` (up: lossless doubling; down: lossy halving; 8 <-> 9: int8 <-> limbs)
    ref, intm = twin_models(make_all_layers_net(), fixed_policy_at(before))
    opts = twin_optimizers(ref, intm, lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = make_batch()
    twin_steps(ref, intm, opts, x, _loss(y))
    for model in (ref, intm):
        for layer in apt_layers(model).values():
            layer.set_bits(after)
    assert_same_layers(ref, intm)

    for _ in range(2):
        # Execute
        outs, stats = twin_steps(ref, intm, opts, x, _loss(y))

        # Assert
        _assert_twins(ref, intm, opts, outs, stats)
    assert {m.n_bits for m in apt_layers(intm).values()} == {after}


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_int_trained_state_dict_loads_and_packs_to_same_bytes(bits: int) -> None:
    # Prepare: two int-backend steps; a fresh model at another width receives the state
    _, trained = twin_models(make_all_layers_net(), fixed_policy_at(bits))
    _, opt = twin_optimizers(trained, trained, lr=0.1, momentum=0.9)
    x, y = make_batch()
    for _ in range(2):
        twin_steps(trained, trained, (opt, opt), x, _loss(y))
    _, fresh = twin_models(make_all_layers_net(seed=5), fixed_policy_at(4))

    # Execute
    fresh.load_state_dict(trained.state_dict())

    # Assert
    assert_same_layers(trained, fresh)
    assert pack(fresh) == pack(trained)


@pytest.mark.parametrize(("bits", "other"), [(8, 12), (12, 16), (16, 8), (12, 8)])
def test_int_trained_packed_tensors_round_trip(bits: int, other: int) -> None:
    # Prepare: trained at ``bits`` on the int backend; fresh layers sit at ``other`` bits
    _, trained = twin_models(make_all_layers_net(), fixed_policy_at(bits))
    _, opt = twin_optimizers(trained, trained, lr=0.1, momentum=0.9)
    x, y = make_batch()
    twin_steps(trained, trained, (opt, opt), x, _loss(y))
    _, fresh = twin_models(make_all_layers_net(seed=5), fixed_policy_at(other))
    _, wired = twin_models(make_all_layers_net(seed=6), fixed_policy_at(other))

    # Execute
    for name, layer in apt_layers(trained).items():
        for t in layer.packed_tensors(name):
            apt_layers(fresh)[name].load_packed(t.name.rpartition(".")[2], t)
    unpack(wired, pack(trained))

    # Assert: same codes, exponents, bits and storage; both continue training identically
    assert_same_layers(trained, fresh)
    assert_same_layers(trained, wired)
    assert pack(fresh) == pack(trained)
