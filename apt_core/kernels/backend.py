"""The execution backend switch and the once-per-reason fallback log."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

BACKENDS = ("int", "reference")

_state = {"backend": "int"}
_logged: set[str] = set()


class BackendError(ValueError):
    """An unknown execution backend was requested."""


def set_backend(name: str) -> None:
    """Select how APT layers and APTSGD execute from now on.

    Parameters
    ----------
    name : str
        ``"int"`` (integer GEMMs on int8 codes, fused optimizer passes; the default) or
        ``"reference"`` (the float emulation every integer result is tested against).
    """
    if name not in BACKENDS:
        raise BackendError(f"backend={name!r} is not one of {BACKENDS}.")
    _state["backend"] = name


def get_backend() -> str:
    """The backend selected by :func:`set_backend`."""
    return _state["backend"]


def log_once(reason: str, message: str, *args: object) -> None:
    """Log a warning the first time ``reason`` occurs in this process."""
    if reason in _logged:
        return
    _logged.add(reason)
    log.warning(message, *args)
