"""Validated, frozen configuration for adaptive-precision training."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from apt_core.errors import PolicyError

ROUNDING_MODES = ("nearest", "stochastic")

#: Lowest and highest bit-widths the fixed-point format supports (codes are packed at
#: exactly b bits; 2 bits is the smallest signed grid with a non-zero step).
FORMAT_BITS_MIN = 2
FORMAT_BITS_MAX = 16


def _require(cond: bool, field: str, value: Any, reason: str) -> None:
    if not cond:
        raise PolicyError(f"Invalid precision policy: field '{field}' = {value!r}: {reason}.")


@dataclass(frozen=True)
class PrecisionPolicy:
    """How every APT layer chooses its bit-width.

    Parameters
    ----------
    t_min : float (default: 0.25)
        Lower threshold on Gavg (mean |update| / quantization step). A layer whose Gavg
        falls below it gains one bit. This is the user-facing trade-off knob: higher
        means more bits, more accuracy, more cost.
    t_max : float | None (default: None -> 4 * t_min)
        Upper threshold on Gavg; above it a layer drops one bit. Must be >= 2 * t_min,
        because one bit doubles Gavg and a tighter band oscillates.
    bits_min : int (default: 4)
        Lowest weight bit-width a layer may reach.
    bits_max : int (default: 12)
        Highest weight bit-width a layer may reach (the "bits cap" knob). The format
        allows up to 16; the default caps at 12 because the bits APT adds in the
        low-learning-rate tail buy no accuracy (docs/results/*/results.md).
    bits_init : int (default: 8)
        Bit-width every layer starts at (clamped into [bits_min, bits_max]).
    check_every : int (default: 10)
        K: optimizer steps between two controller checks. Bits move one at a time, so a
        long window cannot follow the learning-rate schedule: with K=50 a layer needs
        400 steps (17 digits epochs) to climb 8 bits.
    rounding : str (default: "stochastic")
        Rounding of the weight update onto the grid. "stochastic" is unbiased: an update
        below half a step moves its weight with the matching probability. "nearest" is the
        APT paper's reading: an update below half a step is lost (underflow), which the
        Gavg rule cures by adding bits, until ``bits_max``. Stochastic is the default
        because with bits capped at 12 (what a 60% uplink saving allows) nearest rounding
        loses the small updates of the decayed learning rate on every device of a fleet
        (20 devices, 30 rounds, 3 seeds, paired against fp32: nearest -1.66 pt on
        MNIST-1D and -0.65 on digits, stochastic -0.16 and -0.04 at the same bits;
        docs/results/federated/README.md).
    act_bits : int (default: 8)
        Bits of the per-tensor dynamic fixed-point activations entering each GEMM.
    err_bits : int (default: 8)
        Bits of the per-tensor dynamic fixed-point error (gradient w.r.t. layer output).
    adaptive : bool (default: True)
        False freezes every layer at ``bits_init`` (the fixedN baselines).
    """

    t_min: float = 0.25
    t_max: float | None = None
    bits_min: int = 4
    bits_max: int = 12
    bits_init: int = 8
    check_every: int = 10
    rounding: str = "stochastic"
    act_bits: int = 8
    err_bits: int = 8
    adaptive: bool = True

    def __post_init__(self) -> None:
        _require(
            isinstance(self.t_min, int | float) and math.isfinite(self.t_min) and self.t_min > 0,
            "t_min",
            self.t_min,
            "must be a finite number > 0",
        )
        if self.t_max is None:
            object.__setattr__(self, "t_max", 4.0 * float(self.t_min))
        t_max = self.t_max
        _require(
            isinstance(t_max, int | float) and math.isfinite(t_max) and t_max > 0,
            "t_max",
            t_max,
            "must be a finite number > 0",
        )
        assert t_max is not None
        _require(
            t_max >= 2 * self.t_min,
            "t_max",
            t_max,
            f"must be at least 2 * t_min = {2 * self.t_min:g} (one bit doubles Gavg, "
            "a narrower band oscillates)",
        )
        for name in ("bits_min", "bits_max", "bits_init", "act_bits", "err_bits"):
            v = getattr(self, name)
            _require(
                isinstance(v, int)
                and not isinstance(v, bool)
                and FORMAT_BITS_MIN <= v <= FORMAT_BITS_MAX,
                name,
                v,
                f"must be an integer in [{FORMAT_BITS_MIN}, {FORMAT_BITS_MAX}]",
            )
        _require(
            self.bits_min <= self.bits_max,
            "bits_min",
            self.bits_min,
            f"must not exceed bits_max = {self.bits_max}",
        )
        _require(
            isinstance(self.check_every, int)
            and not isinstance(self.check_every, bool)
            and self.check_every > 0,
            "check_every",
            self.check_every,
            "must be a positive integer",
        )
        _require(
            self.rounding in ROUNDING_MODES,
            "rounding",
            self.rounding,
            f"must be one of {ROUNDING_MODES}",
        )
        _require(isinstance(self.adaptive, bool), "adaptive", self.adaptive, "must be a bool")

    @property
    def start_bits(self) -> int:
        """The bit-width a fresh layer starts at."""
        return min(max(self.bits_init, self.bits_min), self.bits_max)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionPolicy:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(f"Invalid precision policy: unknown field '{unknown[0]}'.")
        return cls(**data)

    def with_(self, **changes: Any) -> PrecisionPolicy:
        """A copy with some fields changed (re-validated)."""
        if "t_min" in changes and "t_max" not in changes:
            changes["t_max"] = None
        return replace(self, **changes)


def fixed_policy(bits: int) -> PrecisionPolicy:
    """Policy of the fixedN baselines: N-bit integer weights, no adaptation.

    Round-to-nearest: the plain fixed-point trainer whose underflow stall APT's bit
    adaptation answers (docs/results/*/notes.md).
    """
    return PrecisionPolicy(
        bits_min=bits, bits_max=bits, bits_init=bits, rounding="nearest", adaptive=False
    )


#: Named policies the CLI and the coordinator accept. The benchmark (docs/results)
#: chose them; see docs/results/*/results.md for the trade-off each one buys.
NAMED_POLICIES: dict[str, PrecisionPolicy] = {
    "default": PrecisionPolicy(),
    "aggressive": PrecisionPolicy(rounding="stochastic", bits_max=8),
    "accurate": PrecisionPolicy(bits_max=16),
    # the default with the APT paper's round-to-nearest update (small updates underflow)
    "nearest": PrecisionPolicy(rounding="nearest"),
    # the default since rounding became stochastic by default; kept so that runs stored
    # under this name still resolve
    "stochastic": PrecisionPolicy(rounding="stochastic"),
}


def resolve_policy(spec: str) -> PrecisionPolicy:
    """A named policy, or ``key=value,key=value`` overrides of the default one."""
    if spec in NAMED_POLICIES:
        return NAMED_POLICIES[spec]
    if "=" not in spec:
        raise PolicyError(
            f"Invalid precision policy: name '{spec}' is not one of {sorted(NAMED_POLICIES)} "
            "and is not a key=value list."
        )
    base = NAMED_POLICIES["default"]
    changes: dict[str, Any] = {}
    for item in spec.split(","):
        key, _, raw = item.partition("=")
        key = key.strip()
        typ = {f.name: f.type for f in fields(PrecisionPolicy)}.get(key)
        if typ is None:
            raise PolicyError(f"Invalid precision policy: unknown field '{key}'.")
        raw = raw.strip()
        try:
            if key in ("rounding",):
                changes[key] = raw
            elif key == "adaptive":
                changes[key] = raw.lower() in ("1", "true", "yes")
            elif key in ("t_min", "t_max"):
                changes[key] = float(raw)
            else:
                changes[key] = int(raw)
        except ValueError:
            raise PolicyError(
                f"Invalid precision policy: field '{key}' = {raw!r}: not a number."
            ) from None
    return base.with_(**changes)
