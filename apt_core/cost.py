"""Energy and memory cost model of one training step, with cited 45 nm constants.

Energy constants: M. Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, 45 nm, 0.9 V:

=================  ========  =================  =========
operation          energy    operation          energy
=================  ========  =================  =========
int8 add           0.03 pJ   int8 mult          0.2 pJ
int32 add          0.1 pJ    int32 mult         3.1 pJ
fp16 add           0.4 pJ    fp16 mult          1.1 pJ
fp32 add           0.9 pJ    fp32 mult          3.7 pJ
8 KB SRAM, 64 b    10 pJ     1 MB SRAM, 64 b    100 pJ
DRAM, 64 b         1.3-2.6 nJ
=================  ========  =================  =========

Scaling to other widths (the usual rule): an integer multiplier's energy grows with the
product of its operand widths, ``E_mul(bx, bw) = 0.2 pJ * bx*bw / 64`` (this gives
3.2 pJ at 32x32 against the measured 3.1 pJ); an adder's linearly with its width,
``E_add(b) = 0.1 pJ * b / 32``. Integer GEMMs accumulate in 32 bits, so each MAC pays one
int32 add. Float MACs pay fp32 mult + fp32 add = 4.6 pJ.

Per step and layer the GEMM energy counts the forward GEMM, the input-gradient GEMM
(skipped for a layer whose input needs no gradient, e.g. the first) and the
weight-gradient GEMM. Operand widths per method:

* fp32: every GEMM in fp32.
* qat8: forward int8 x int8 (fake-quantized weights and activations); both backward
  GEMMs in fp32 (QAT back-propagates through the float master weights).
* fixedN / apt: forward act_bits x b_w; input gradient err_bits x b_w; weight gradient
  err_bits x act_bits.

Movement energy: every parameter is read once and written once per step, and so is the
optimizer state, at the stored widths, times the per-bit energy of the memory holding
them (default DRAM at 2.6 nJ / 64 bit = 40.6 pJ/bit, the upper Horowitz value: the
off-chip case APT/RCT report). qat8 also writes and reads its 8-bit weight copy.
Activation traffic is not modelled (the papers report parameter movement only);
activation *memory* is reported separately by :func:`activation_bits`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

PJ = 1e-12


@dataclass(frozen=True)
class EnergyConstants:
    """Horowitz ISSCC 2014 (45 nm) energies in pJ; see the module docstring."""

    int8_mult_pj: float = 0.2
    int32_add_pj: float = 0.1
    fp32_mult_pj: float = 3.7
    fp32_add_pj: float = 0.9
    mem_pj_per_64b: float = 2600.0  # DRAM (upper value); 1 MB SRAM would be 100.0
    acc_bits: int = 32

    def int_mac_pj(self, bx: int, bw: int) -> float:
        """Energy of one integer MAC with a 32-bit accumulator."""
        return self.int8_mult_pj * bx * bw / 64.0 + self.int32_add_pj * self.acc_bits / 32.0

    @property
    def fp32_mac_pj(self) -> float:
        """Energy of one fp32 MAC."""
        return self.fp32_mult_pj + self.fp32_add_pj

    @property
    def mem_pj_per_bit(self) -> float:
        """Energy of moving one bit to or from memory."""
        return self.mem_pj_per_64b / 64.0


HOROWITZ_45NM = EnergyConstants()
METHOD_KINDS = ("fp32", "qat8", "fixed")  # apt and fixedN share the "fixed" kind


@dataclass(frozen=True)
class LayerProfile:
    """Static shape facts of one GEMM layer, measured from one forward pass."""

    name: str
    params: int  # weight + bias elements
    macs: int  # forward MACs per sample
    input_grad: bool  # whether the input-gradient GEMM runs
    act_numel: int  # input activation elements per sample (kept for backward)


def profile_layers(model: nn.Module, example: Tensor) -> dict[str, LayerProfile]:
    """Per-layer parameter counts and MACs of ``model`` (float or converted) on one batch.

    A GEMM layer is an nn.Linear/Conv1d/Conv2d (or subclass) or an APT layer.
    """
    from apt_core.layers import APTLayer

    gemm_types = (nn.Linear, nn.Conv1d, nn.Conv2d, APTLayer)
    found: dict[str, LayerProfile] = {}
    hooks = []
    batch = example.shape[0]

    def _hook(name: str, module: nn.Module):  # type: ignore[no-untyped-def]
        def fn(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            if isinstance(mod, APTLayer):
                shape = mod.weight_shape
                params = mod.numel_params()
            else:
                shape = tuple(mod.weight.shape)  # type: ignore[union-attr,arg-type]
                params = sum(p.numel() for p in mod.parameters(recurse=False))
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            x = inputs[0]
            found[name] = LayerProfile(
                name=name,
                params=params,
                macs=(out.numel() // batch) * fan_in,
                input_grad=bool(x.requires_grad),
                act_numel=x.numel() // batch,
            )

        return fn

    for name, m in model.named_modules():
        if isinstance(m, gemm_types):
            hooks.append(m.register_forward_hook(_hook(name, m)))
    modes = {m: m.training for m in model.modules()}
    model.train()  # APT layers only track gradients in training mode
    try:
        with torch.enable_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    for m in model.modules():  # a profiling pass must not leave step state behind
        if isinstance(m, APTLayer):
            m.release()
    return found


@dataclass
class EnergyTotals:
    """Accumulated modelled training energy in joules."""

    gemm_j: float = 0.0
    move_j: float = 0.0

    @property
    def total_j(self) -> float:
        """GEMM plus movement."""
        return self.gemm_j + self.move_j


def step_energy(
    profiles: Mapping[str, LayerProfile],
    batch: int,
    kind: str,
    bits: Mapping[str, int] | None = None,
    act_bits: int = 8,
    err_bits: int = 8,
    state_bits: int = 32,
    constants: EnergyConstants = HOROWITZ_45NM,
) -> EnergyTotals:
    """Modelled energy of one training step.

    Parameters
    ----------
    profiles : Mapping[str, LayerProfile]
        From :func:`profile_layers`.
    batch : int
        Samples in the step.
    kind : str
        "fp32", "qat8" or "fixed" (fixedN and apt).
    bits : Mapping[str, int] | None (default: None)
        Weight bits per layer (required for "fixed").
    act_bits, err_bits : int (default: 8)
        Activation / error widths of the fixed-point GEMMs.
    state_bits : int (default: 32)
        Optimizer-state bits per parameter (momentum), read and written each step.
    constants : EnergyConstants (default: HOROWITZ_45NM)
    """
    if kind not in METHOD_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {METHOD_KINDS}.")
    c = constants
    e = EnergyTotals()
    for name, p in profiles.items():
        macs = p.macs * batch
        n_bwd_input = macs if p.input_grad else 0
        if kind == "fp32":
            gemm = (2 * macs + n_bwd_input) * c.fp32_mac_pj
            moved = p.params * (2 * 32 + 2 * state_bits)
        elif kind == "qat8":
            gemm = macs * c.int_mac_pj(8, 8) + (macs + n_bwd_input) * c.fp32_mac_pj
            moved = p.params * (2 * 32 + 2 * 8 + 2 * state_bits)
        else:
            if bits is None or name not in bits:
                raise ValueError(f"bits of layer '{name}' are required for kind='fixed'.")
            b = bits[name]
            gemm = (
                macs * c.int_mac_pj(act_bits, b)
                + n_bwd_input * c.int_mac_pj(err_bits, b)
                + macs * c.int_mac_pj(err_bits, act_bits)
            )
            moved = p.params * (2 * b + 2 * state_bits)
        e.gemm_j += gemm * PJ
        e.move_j += moved * c.mem_pj_per_bit * PJ
    return e


@dataclass
class CostMeter:
    """Accumulates modelled energy and parameter-weighted bits over training steps."""

    profiles: Mapping[str, LayerProfile]
    kind: str
    act_bits: int = 8
    err_bits: int = 8
    state_bits: int = 32
    constants: EnergyConstants = HOROWITZ_45NM
    energy: EnergyTotals = field(default_factory=EnergyTotals)
    steps: int = 0
    _bit_sum: float = 0.0

    def step(self, batch: int, bits: Mapping[str, int] | None = None) -> EnergyTotals:
        """Charge one training step; returns that step's energy."""
        e = step_energy(
            self.profiles,
            batch,
            self.kind,
            bits,
            self.act_bits,
            self.err_bits,
            self.state_bits,
            self.constants,
        )
        self.energy.gemm_j += e.gemm_j
        self.energy.move_j += e.move_j
        self.steps += 1
        self._bit_sum += mean_bits(self.profiles, bits) if bits else 32.0
        return e

    @property
    def avg_bits(self) -> float:
        """Time-averaged, parameter-weighted weight bits over the charged steps."""
        return self._bit_sum / self.steps if self.steps else float("nan")


def mean_bits(profiles: Mapping[str, LayerProfile], bits: Mapping[str, int]) -> float:
    """Parameter-weighted mean weight bits."""
    total = sum(p.params for n, p in profiles.items() if n in bits)
    return sum(p.params * bits[n] for n, p in profiles.items() if n in bits) / total


def param_bits(profiles: Mapping[str, LayerProfile], bits: Mapping[str, int] | int) -> int:
    """Analytic parameter storage: sum over layers of n_l * b_l."""
    if isinstance(bits, int):
        return sum(p.params for p in profiles.values()) * bits
    return sum(p.params * bits[n] for n, p in profiles.items())


def activation_bits(profiles: Mapping[str, LayerProfile], batch: int, act_bits: int) -> int:
    """Analytic activation memory kept for backward: GEMM inputs at ``act_bits``."""
    return sum(p.act_numel for p in profiles.values()) * batch * act_bits


def tensors_nbytes(tensors: Iterable[Tensor]) -> int:
    """Measured bytes of the storages behind ``tensors`` (a shared storage counted once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        storage = t.untyped_storage()
        key = storage.data_ptr() if storage.nbytes() else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def model_nbytes(model: nn.Module) -> int:
    """Measured bytes of every parameter and buffer the model keeps."""
    return tensors_nbytes(list(model.parameters()) + list(model.buffers()))
