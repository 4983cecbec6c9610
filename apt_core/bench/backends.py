"""Run-time discovery of the kernels' backend switch and fallback counters, for the benchmark."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from torch import nn

from apt_core import apt_layers

# names the kernels may use for a process-wide or per-layer fallback counter
_FALLBACK_FUNCS = ("fallback_count", "fallback_counts", "fallbacks")
_FALLBACK_ATTRS = ("fallbacks", "fallback_count", "n_fallbacks")


def _kernels() -> ModuleType | None:
    try:
        return importlib.import_module("apt_core.kernels")
    except ImportError:
        return None


def available_backends() -> tuple[str, ...]:
    """APT execution backends this apt_core can switch between (empty: no switch)."""
    k = _kernels()
    if k is None or not callable(getattr(k, "set_backend", None)):
        return ()
    return tuple(getattr(k, "BACKENDS", ("int", "reference")))


@contextmanager
def _backend(name: str | None) -> Iterator[None]:
    """Run the block on backend ``name`` (None: leave the switch alone), then restore."""
    k = _kernels()
    if name is None or k is None:
        yield
        return
    before = k.get_backend() if callable(getattr(k, "get_backend", None)) else None
    k.set_backend(name)
    try:
        yield
    finally:
        if before is not None:
            k.set_backend(before)


def _fallback_reader() -> tuple[str, Callable[[], int]] | None:
    """A process-wide fallback counter of the kernels, if they expose one."""
    k = _kernels()
    for name in _FALLBACK_FUNCS:
        obj = getattr(k, name, None) if k is not None else None
        if obj is None:
            continue

        def read(obj: Any = obj) -> int:
            v = obj() if callable(obj) else obj
            return int(sum(v.values())) if isinstance(v, dict) else int(v)

        try:
            read()
        except (TypeError, ValueError):
            continue
        return f"apt_core.kernels.{name}", read
    return None


def _layer_fallbacks(model: nn.Module) -> int | None:
    """Sum of per-layer fallback counters, if the layers keep any."""
    total, found = 0, False
    for layer in apt_layers(model).values():
        for name in _FALLBACK_ATTRS:
            v = getattr(layer, name, None)
            if v is None or callable(v):
                continue
            found = True
            total += int(sum(v.values())) if isinstance(v, dict) else int(v)
            break
    return total if found else None
