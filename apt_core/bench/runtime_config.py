"""Settings and the default grid of cases of the runtime benchmark."""

from __future__ import annotations

from dataclasses import dataclass

from apt_core.config import PrecisionPolicy

#: The issue-9 targets grid: (task, model, batch).
DEFAULT_CASES: tuple[tuple[str, str, int], ...] = (
    ("digits", "mlp-wide", 64),
    ("digits", "mlp-wide", 256),
    ("digits", "cnn", 64),
    ("mnist1d", "cnn", 64),
)
DEFAULT_BITS: tuple[int, ...] = (8, 12, 16)


@dataclass(frozen=True)
class RuntimeConfig:
    """Settings shared by every model of the runtime benchmark.

    Parameters
    ----------
    steps : int (default: 25)
        Timed steps per model (the median is reported; use >= 20 for published figures).
    warmup : int (default: 5)
        Untimed rounds first (allocator, caches, compiled kernels).
    lr : float (default: 0.05)
    momentum : float (default: 0.9)
    weight_decay : float (default: 5e-4)
        As in the centralized benchmark, for fp32 and APT alike.
    threads : int (default: 1)
        torch intra-op threads during the measurement.
    seed : int (default: 0)
        Seed of the initial weights (the same for every model of a case).
    rounding : str (default: the default policy's)
        Rounding of the APT models' weight updates.
    """

    steps: int = 25
    warmup: int = 5
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    threads: int = 1
    seed: int = 0
    rounding: str = PrecisionPolicy().rounding

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("warmup", 0), ("threads", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                raise ValueError(
                    f"RuntimeConfig field '{name}' = {v!r} must be an integer >= {low}."
                )
