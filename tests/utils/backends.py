"""Twin APT models run side by side on the integer and the reference backend."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import Tensor, nn

from apt_core.config import PrecisionPolicy
from apt_core.conversion import apt_layers, to_apt
from apt_core.kernels import get_backend, set_backend
from apt_core.kernels.compiled import _enabled as compiled_state
from apt_core.kernels.compiled import set_compiled
from apt_core.layers import APTLayer
from apt_core.optimizer import APTSGD, LayerStepStats

#: float32 unit roundoff: one rounding moves a value by at most this fraction of it.
FP32_U = 2.0**-24

#: Gavg is a float64 sum of |update| taken in a different order by the two backends.
GAVG_RTOL = 1e-9

LossFn = Callable[[Tensor], Tensor]


@contextmanager
def backend(name: str) -> Iterator[None]:
    """Run the block on backend ``name`` ("int" or "reference"), then restore the old one."""
    before = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


@contextmanager
def compiled_kernels(enabled: bool) -> Iterator[None]:
    """Run the integer kernels compiled (``True``) or eagerly, then restore the setting.

    Eager runs the same code and float ops without compile time. The compiled path is
    checked by a few dedicated tests; the others would spend most of their time in
    inductor (one graph per combination of the kernels' flags).
    """
    before = compiled_state["compile"]
    set_compiled(enabled)
    try:
        yield
    finally:
        set_compiled(before)


def eager_kernels() -> AbstractContextManager[None]:
    """Shorthand for ``compiled_kernels(False)``."""
    return compiled_kernels(False)


def twin_models(model: nn.Module, policy: PrecisionPolicy) -> tuple[nn.Module, nn.Module]:
    """Two independent APT copies of ``model`` with the same initial codes.

    Returned as ``(reference, integer)``.
    """
    return to_apt(copy.deepcopy(model), policy), to_apt(copy.deepcopy(model), policy)


def twin_optimizers(ref: nn.Module, intm: nn.Module, **kwargs: object) -> tuple[APTSGD, APTSGD]:
    """APTSGD on each twin, same settings, pinned to its backend."""
    return (
        APTSGD(ref, backend="reference", **kwargs),  # type: ignore[arg-type]
        APTSGD(intm, backend="int", **kwargs),
    )  # type: ignore[arg-type]


def train_step(
    model: nn.Module, opt: APTSGD, name: str, x: Tensor, loss_fn: LossFn
) -> tuple[Tensor, dict[str, LayerStepStats]]:
    """One zero_grad / forward / backward / step on backend ``name``: (output, stats)."""
    with backend(name):
        model.train()
        opt.zero_grad()
        out = model(x)
        loss_fn(out).backward()
        return out.detach(), opt.step()


def twin_steps(
    ref: nn.Module, intm: nn.Module, opts: tuple[APTSGD, APTSGD], x: Tensor, loss_fn: LossFn
) -> tuple[tuple[Tensor, Tensor], tuple[dict[str, LayerStepStats], dict[str, LayerStepStats]]]:
    """One training step of each twin on its backend: ((outputs), (stats))."""
    out_r, st_r = train_step(ref, opts[0], "reference", x, loss_fn)
    out_i, st_i = train_step(intm, opts[1], "int", x, loss_fn)
    return (out_r, out_i), (st_r, st_i)


def layer_state(layer: APTLayer) -> dict[str, object]:
    """Everything an APT layer keeps between steps, decoded: codes, exponents, bits."""
    out: dict[str, object] = {"bits": layer.n_bits}
    for which in layer.tensors():
        out[f"{which}_codes"] = layer.codes(which)
        out[f"{which}_exp"] = layer.exponent(which)
        out[f"{which}_stored"] = layer.stored(which)
    return out


def assert_same_layers(ref: nn.Module, intm: nn.Module) -> None:
    """Identical codes, stored int8 matrices, exponents and bits in every APT layer."""
    ref_layers, int_layers = apt_layers(ref), apt_layers(intm)
    assert list(ref_layers) == list(int_layers)
    for name, layer in ref_layers.items():
        want, got = layer_state(layer), layer_state(int_layers[name])
        for key, value in want.items():
            msg = f"layer {name!r} {key}"
            if isinstance(value, Tensor):
                torch.testing.assert_close(
                    got[key], value, rtol=0, atol=0, msg=lambda m, msg=msg: f"{msg}: {m}"
                )
            else:
                assert got[key] == value, f"{msg}: int {got[key]} != reference {value}"


def assert_same_stats(ref: dict[str, LayerStepStats], got: dict[str, LayerStepStats]) -> None:
    """Same layers, same skip / overflow / underflow; Gavg within :data:`GAVG_RTOL`."""
    assert list(got) == list(ref)
    for name, want in ref.items():
        have = got[name]
        assert (have.skipped, have.overflow_shifts) == (want.skipped, want.overflow_shifts), (
            f"layer {name!r}: int {have} != reference {want}"
        )
        assert have.underflow == want.underflow, f"layer {name!r}: int {have} != {want}"
        torch.testing.assert_close(
            have.gavg,
            want.gavg,
            rtol=GAVG_RTOL,
            atol=0,
            msg=f"layer {name!r} gavg: int {have.gavg} != {want.gavg}",
        )


def assert_same_optimizer_state(ref: APTSGD, got: APTSGD) -> None:
    """Assert the same momentum codes and exponents, and the same skip and overflow counters.

    Codes and exponents are nan where the float part is nan; those compare equal.
    """
    want_t, got_t = list(ref.state_tensors()), list(got.state_tensors())
    assert len(got_t) == len(want_t)
    for w, g in zip(want_t, got_t, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
    assert got.nonfinite_skips == ref.nonfinite_skips
    assert got.overflow_shifts == ref.overflow_shifts


def fp32_sum_bound(abs_sum: Tensor, terms: int, unit: Tensor | float) -> Tensor:
    """Largest difference between two float32 sums of the same exact products.

    Products of fixed-point codes are exact in float32 (|q_x q_w| < 2**22). A float32
    sum of them is exact in any order while ``sum |products|`` stays below ``2**24``
    units of the finest grid (every partial sum is then representable), so the bound
    is 0 there. Above it, each of the ``terms`` additions (plus the integer path's one
    conversion and one bias add) rounds by at most ``FP32_U`` of a partial sum, itself
    at most ``abs_sum``: ``(terms + 2) * FP32_U * abs_sum``.

    Parameters
    ----------
    abs_sum : Tensor
        ``sum |products|`` per output element (float64, real units).
    terms : int
        Most products summed into one output element.
    unit : Tensor | float
        Finest grid step among the summands (real units).
    """
    exact = abs_sum < (2.0**24) * unit
    bound = (terms + 2) * FP32_U * abs_sum
    return torch.where(exact, torch.zeros_like(bound), bound)


def assert_within(got: Tensor, want: Tensor, bound: Tensor, what: str) -> None:
    """|got - want| <= bound elementwise (bound 0 means bit-identical)."""
    excess = ((got.double() - want.double()).abs() - bound).clamp_min(0.0)
    n_exact = int((bound == 0).sum())
    torch.testing.assert_close(
        excess,
        torch.zeros_like(excess),
        rtol=0,
        atol=0,
        msg=lambda m: (
            f"{what}: int differs from reference beyond the float32 bound "
            f"({n_exact}/{bound.numel()} elements required exact): {m}"
        ),
    )


def apt_layer_list(model: nn.Module) -> list[APTLayer]:
    """The APT layers of ``model`` in module order."""
    return list(apt_layers(model).values())


class AllLayersNet(nn.Module):
    """Conv2d -> ReLU -> MaxPool2d -> Conv1d -> ReLU -> LayerNorm -> Linear on 1x6x6 inputs.

    Every layer type ``to_apt`` converts (and swaps: ReLU, non-overlapping MaxPool2d),
    plus a LayerNorm that stays float. Fan-ins stay small (9, 9, 28) so that the float
    reference's GEMMs are exact at every bit width with these seeds.
    """

    input_shape = (1, 6, 6)
    classes = 5

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(1, 3, kernel_size=3, padding=1)  # -> 3x6x6
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)  # -> 3x3x3
        self.conv1 = nn.Conv1d(3, 4, kernel_size=3)  # 3x9 -> 4x7
        self.act1 = nn.ReLU()
        self.norm = nn.LayerNorm(28)
        self.head = nn.Linear(28, self.classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.act2(self.conv2(x))).flatten(2)
        x = self.act1(self.conv1(x)).flatten(1)
        return self.head(self.norm(x))


def make_all_layers_net(seed: int = 0) -> AllLayersNet:
    """An :class:`AllLayersNet` with weights from a fixed seed."""
    torch.manual_seed(seed)
    return AllLayersNet()


def make_batch(batch: int = 4, seed: int = 1) -> tuple[Tensor, Tensor]:
    """A fixed random batch for :class:`AllLayersNet`: (inputs, class targets)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *AllLayersNet.input_shape), generator=gen)
    return x, torch.randint(0, AllLayersNet.classes, (batch,), generator=gen)


def fixed_policy_at(bits: int, **changes: object) -> PrecisionPolicy:
    """A policy that starts every layer at ``bits`` (any width 2..16)."""
    return PrecisionPolicy(bits_min=2, bits_max=16, bits_init=bits, **changes)  # type: ignore[arg-type]
