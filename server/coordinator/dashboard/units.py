"""Human-readable numbers for the dashboard: percentages, bytes, joules, timestamps."""

from __future__ import annotations

from datetime import datetime

_SI_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _si(value: float, unit: str) -> str:
    """``value`` with a decimal SI prefix, e.g. ``1.5 kJ`` (decimal, so axis ticks stay round)."""
    for factor, prefix in _SI_PREFIXES:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def format_bytes(value: float) -> str:
    """Bytes with a decimal prefix: ``2.5 MB``."""
    return _si(value, "B")


def format_energy(value: float) -> str:
    """Joules with a decimal prefix: ``4.5 J``, ``1.2 kJ``."""
    return _si(value, "J")


def format_percent(value: float | None) -> str:
    """A share in [0, 1] as a percentage: ``91.2%`` (``—`` when unknown)."""
    return "—" if value is None else f"{100 * value:.1f}%"


def format_number(value: float | None) -> str:
    """A plain number with up to 4 significant digits (``—`` when unknown)."""
    if value is None:
        return "—"
    return f"{value:.4g}"


def format_time(value: datetime | None) -> str:
    """A UTC timestamp to the second: ``2025-01-31 12:00:05 UTC`` (``—`` when unknown)."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")
