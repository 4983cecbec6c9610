"""Every error apt_core raises: one base class, one subclass per kind of bad input.

Each message is a full sentence naming the offending field or key and its value, so a
caller can show it as it is (the coordinator maps them to HTTP 422).
"""

from __future__ import annotations


class APTError(ValueError):
    """Base of apt_core's errors (a ValueError: every one is a bad value)."""


class PolicyError(APTError):
    """A precision policy value is out of its allowed range."""


class PackError(APTError):
    """A packed payload is malformed (bad magic, version, header or length)."""


class DataError(APTError):
    """A task, partitioning or split request cannot be served."""


class ModelError(APTError):
    """A model name or task name is not one of the supported choices."""


class ReplyError(APTError):
    """A device's reply cannot be aggregated; the message says why in a full sentence."""


class SettingsError(APTError):
    """A federated run setting is out of its allowed range."""


class BudgetError(APTError):
    """A device-class resource budget is invalid, or no bit width fits it."""
