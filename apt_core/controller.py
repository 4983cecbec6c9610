"""Per-layer precision controller: Gavg thresholds move each layer's bit-width by one bit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from apt_core.config import PrecisionPolicy
from apt_core.optimizer import LayerStepStats


@dataclass(frozen=True)
class PrecisionCheck:
    """One controller check of one layer: what it measured and what it decided."""

    step: int
    layer: str
    old_bits: int
    bits: int
    exponent: int
    gavg: float
    underflow: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


class PrecisionController:
    """Accumulates per-step layer statistics and decides bit changes every K steps.

    Every ``policy.check_every`` observed steps it averages Gavg and the underflow share
    per layer; Gavg < t_min adds one bit, Gavg > t_max removes one, clamped to
    [bits_min, bits_max]. It only takes and returns plain data.
    """

    def __init__(self, policy: PrecisionPolicy) -> None:
        self.policy = policy
        self.history: list[PrecisionCheck] = []
        self._sum_gavg: dict[str, float] = {}
        self._sum_under: dict[str, float] = {}
        self._n: dict[str, int] = {}
        self._steps = 0

    def set_policy(self, policy: PrecisionPolicy) -> None:
        """Adopt a new policy (the caller should then apply :meth:`clamp`)."""
        self.policy = policy

    def clamp(self, bits: Mapping[str, int]) -> dict[str, int]:
        """Bit-widths moved into the policy's [bits_min, bits_max] range."""
        lo, hi = self.policy.bits_min, self.policy.bits_max
        return {n: min(max(b, lo), hi) for n, b in bits.items()}

    def observe(self, stats: Mapping[str, LayerStepStats]) -> None:
        """Add one optimizer step's statistics (skipped layers are not counted)."""
        self._steps += 1
        for name, s in stats.items():
            if s.skipped:
                continue
            self._sum_gavg[name] = self._sum_gavg.get(name, 0.0) + s.gavg
            self._sum_under[name] = self._sum_under.get(name, 0.0) + s.underflow
            self._n[name] = self._n.get(name, 0) + 1

    def due(self) -> bool:
        """True when K steps have been observed since the last check."""
        return self._steps >= self.policy.check_every

    def decide(self, step: int, layers: Mapping[str, tuple[int, int]]) -> dict[str, int]:
        """Close the window: new bit-width per layer, and a history entry for each.

        Parameters
        ----------
        step : int
            Global step count, recorded in the history.
        layers : Mapping[str, tuple[int, int]]
            Current (bits, weight exponent) of every layer.

        Returns
        -------
        dict[str, int]
            The bit-width each layer should have now.
        """
        p = self.policy
        assert p.t_max is not None
        out: dict[str, int] = {}
        for name, (bits, exponent) in layers.items():
            n = self._n.get(name, 0)
            new = bits
            gavg = self._sum_gavg.get(name, 0.0) / n if n else float("nan")
            under = self._sum_under.get(name, 0.0) / n if n else float("nan")
            if p.adaptive and n:
                if gavg < p.t_min:
                    new = bits + 1
                elif gavg > p.t_max:
                    new = bits - 1
            new = min(max(new, p.bits_min), p.bits_max)
            out[name] = new
            self.history.append(
                PrecisionCheck(step, name, bits, new, exponent + new - bits, gavg, under)
            )
        self._sum_gavg.clear()
        self._sum_under.clear()
        self._n.clear()
        self._steps = 0
        return out
