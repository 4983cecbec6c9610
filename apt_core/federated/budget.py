"""Device-class resource budgets: the weight bit cap a memory or energy budget allows.

Everything here is **modelled**, from a model's layer profile (:func:`apt_core.cost.profile_layers`)
and the cost model's bytes per bit and Horowitz energies, not measured on a device:

* training memory at ``b`` weight bits = weights at ``b`` bits + optimizer state at
  ``state_bits`` per parameter (APTSGD's int8 momentum: 8) + the GEMM inputs kept for
  backward at ``act_bits`` for one batch (:func:`apt_core.cost.activation_bits`);
* energy of one local round at ``b`` bits = ``steps`` training steps of
  :func:`apt_core.cost.step_energy` with every layer at ``b`` bits, GEMM energy per example
  and movement energy per step, as the fp32 estimate of a run counts it.

Both grow with ``b``, so a budget's cap is the largest width in the allowed range that fits
both; a budget that not even the lowest width fits is refused with :class:`BudgetError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apt_core.config import PrecisionPolicy
from apt_core.cost import LayerProfile, activation_bits, param_bits, step_energy
from apt_core.errors import BudgetError
from apt_core.federated.settings import effective_policy

#: Fields of a budget as the policy stores them (per device class).
MEMORY_FIELD = "memory_bytes"
ENERGY_FIELD = "energy_j"


@dataclass(frozen=True)
class Budget:
    """What one device class may spend on training.

    Parameters
    ----------
    memory_bytes : int
        Training memory the device can give (weights, optimizer state, activations).
    energy_j : float | None (default: None)
        Energy the device may spend on one local round; None: no energy limit.
    """

    memory_bytes: int
    energy_j: float | None = None

    def __post_init__(self) -> None:
        m = self.memory_bytes
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise BudgetError(
                f"Invalid budget: field '{MEMORY_FIELD}' = {m!r}: must be an integer >= 1."
            )
        e = self.energy_j
        if e is not None and (
            isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e) or e <= 0
        ):
            raise BudgetError(
                f"Invalid budget: field '{ENERGY_FIELD}' = {e!r}: must be a finite number > 0."
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Budget:
        """A budget from its stored fields; an unknown field is refused by name."""
        unknown = sorted(set(values) - {MEMORY_FIELD, ENERGY_FIELD})
        if unknown:
            raise BudgetError(f"Invalid budget: unknown field '{unknown[0]}'.")
        if MEMORY_FIELD not in values:
            raise BudgetError(f"Invalid budget: field '{MEMORY_FIELD}' is required.")
        return cls(int(values[MEMORY_FIELD]), values.get(ENERGY_FIELD))

    def to_dict(self) -> dict[str, Any]:
        """The stored fields (``energy_j`` left out when None)."""
        out: dict[str, Any] = {MEMORY_FIELD: self.memory_bytes}
        if self.energy_j is not None:
            out[ENERGY_FIELD] = self.energy_j
        return out


@dataclass(frozen=True)
class Workload:
    """How a device trains in one round (what memory and energy depend on besides bits).

    Parameters
    ----------
    batch_size : int (default: 16)
    samples : int (default: 0)
        Training examples a device goes through per local epoch (a run's mean partition).
    epochs : int (default: 1)
        Local epochs per round.
    act_bits, err_bits : int (default: 8)
        Widths of the activations and errors entering the GEMMs.
    state_bits : int (default: 8)
        Optimizer-state bits per parameter (APTSGD's int8 momentum).
    """

    batch_size: int = 16
    samples: int = 0
    epochs: int = 1
    act_bits: int = 8
    err_bits: int = 8
    state_bits: int = 8

    @property
    def steps(self) -> int:
        """Optimizer steps of one local round."""
        return math.ceil(self.samples / self.batch_size) * self.epochs if self.samples else 0


def training_memory_bytes(
    profiles: Mapping[str, LayerProfile], bits: int, workload: Workload
) -> int:
    """Modelled training memory with every layer at ``bits``: weights, state, activations."""
    weights = param_bits(profiles, bits)
    state = param_bits(profiles, workload.state_bits)
    acts = activation_bits(profiles, workload.batch_size, workload.act_bits)
    return math.ceil((weights + state + acts) / 8)


def round_energy_j(profiles: Mapping[str, LayerProfile], bits: int, workload: Workload) -> float:
    """Modelled energy of one local round with every layer at ``bits``."""
    per_example = step_energy(
        profiles,
        1,
        "fixed",
        dict.fromkeys(profiles, bits),
        workload.act_bits,
        workload.err_bits,
        workload.state_bits,
    )
    examples = workload.samples * workload.epochs
    return per_example.gemm_j * examples + per_example.move_j * workload.steps


def bits_cap(
    profiles: Mapping[str, LayerProfile],
    budget: Budget,
    workload: Workload,
    bits_range: tuple[int, int],
) -> int:
    """The highest weight width in ``bits_range`` whose modelled cost fits ``budget``.

    Parameters
    ----------
    profiles : Mapping[str, LayerProfile]
        The model's layers (:func:`apt_core.cost.profile_layers`).
    budget : Budget
        The device class's memory (and energy) budget.
    workload : Workload
        Batch, examples and epochs of a local round; widths of activations and state.
    bits_range : tuple[int, int]
        ``(bits_min, bits_max)`` the class's policy allows.

    Returns
    -------
    int
        The cap: memory and energy at that width fit the budget (modelled).

    Raises
    ------
    BudgetError
        Naming ``memory_bytes`` or ``energy_j`` and its value, and what ``bits_min``
        needs, when not even the lowest width fits.
    """
    low, high = bits_range
    need_mem = training_memory_bytes(profiles, low, workload)
    if need_mem > budget.memory_bytes:
        raise BudgetError(
            f"Invalid budget: field '{MEMORY_FIELD}' = {budget.memory_bytes}: no weight "
            f"width in [{low}, {high}] fits; {low} bits need {need_mem} bytes of training "
            "memory (modelled)."
        )
    if budget.energy_j is not None:
        need_e = round_energy_j(profiles, low, workload)
        if need_e > budget.energy_j:
            raise BudgetError(
                f"Invalid budget: field '{ENERGY_FIELD}' = {budget.energy_j!r}: no weight "
                f"width in [{low}, {high}] fits; {low} bits need {need_e:.3g} J per round "
                "(modelled)."
            )
    cap = low
    for b in range(low + 1, high + 1):
        if training_memory_bytes(profiles, b, workload) > budget.memory_bytes:
            break
        if budget.energy_j is not None and round_energy_j(profiles, b, workload) > budget.energy_j:
            break
        cap = b
    return cap


def class_caps(
    profiles: Mapping[str, LayerProfile],
    policy: PrecisionPolicy,
    overrides: Mapping[str, Mapping[str, Any]],
    budgets: Mapping[str, Budget],
    workload: Workload,
) -> dict[str, int]:
    """Each budgeted class's bit cap, within the range its effective policy allows.

    Raises
    ------
    BudgetError
        The first class whose budget no width fits; the message starts with the class.
    """
    caps: dict[str, int] = {}
    for device_class, budget in budgets.items():
        eff = effective_policy(policy, overrides, device_class)
        w = Workload(**{**workload.__dict__, "act_bits": eff.act_bits, "err_bits": eff.err_bits})
        try:
            caps[device_class] = bits_cap(profiles, budget, w, (eff.bits_min, eff.bits_max))
        except BudgetError as exc:
            raise BudgetError(f"Device class '{device_class}': {exc}") from None
    return caps


def capped_overrides(
    overrides: Mapping[str, Mapping[str, Any]], caps: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """``overrides`` with each capped class's ``bits_max`` set to its cap.

    The cap already lies within the class's range (:func:`class_caps`), so the result is a
    valid override and reaches devices in the round config like any other.
    """
    out = {c: dict(v) for c, v in overrides.items()}
    for device_class, cap in caps.items():
        out.setdefault(device_class, {})["bits_max"] = int(cap)
    return out
