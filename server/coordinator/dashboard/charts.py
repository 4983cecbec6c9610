"""Shared pieces of the server-side SVG charts: tick steps, axis ticks, the empty state."""

from __future__ import annotations

import math
from collections.abc import Callable

from server.coordinator.dashboard.markup import Markup, fmt

# Charts are inline SVG with presentation attributes, never ``style``, so the pages' strict
# Content-Security-Policy holds; stable ids and data-* counts let tests and tools check them.

Formatter = Callable[[float], str]

MARGIN_RIGHT = 16


def nice_step(span: float, target: int) -> float:
    """A 1-2-2.5-5 x 10^k step that cuts ``span`` into about ``target`` pieces."""
    raw = span / max(target, 1)
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= multiple * magnitude * (1 + 1e-9):
            return multiple * magnitude
    return 10 * magnitude


def ticks(low: float, high: float, step: float) -> list[float]:
    """Every multiple of ``step`` from ``low`` to ``high``."""
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def integer_ticks(low: float, high: float, target: int) -> list[float]:
    """About ``target`` whole-number ticks from ``low`` to ``high``."""
    step = max(1.0, math.ceil(nice_step(high - low, target)))
    return [t for t in ticks(low, high, step) if t == int(t)]


def empty(chart_id: str, message: str) -> Markup:
    """The paragraph shown instead of a chart with no data."""
    return fmt('<p class="empty" id="{id}-empty">{message}</p>', id=chart_id, message=message)
