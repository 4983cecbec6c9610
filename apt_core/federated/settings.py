"""Run settings and the precision policy as they travel in a round's config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from apt_core.config import PrecisionPolicy
from apt_core.errors import PolicyError, SettingsError
from apt_core.federated import record_keys as keys

#: Methods a federated run can use. fixedN are centralized baselines only. fp32-q8 trains
#: like fp32 and sends 8-bit weights down and 8-bit updates up (:mod:`.q8`).
FED_METHODS = ("apt", "fp32", "qat8", "fp32-q8")
_POLICY_FIELDS = tuple(f.name for f in fields(PrecisionPolicy))

Overrides = dict[str, dict[str, Any]]
ConfigValue = int | float | str | bool


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def policy_to_config(
    version: int, policy: PrecisionPolicy, overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, ConfigValue]:
    """Flatten a policy, its version and per-class overrides into config entries.

    Keys are ``policy-version``, ``policy.<field>`` and ``override.<class>.<field>`` with
    kebab-case fields (see :mod:`apt_core.federated.record_keys`); every value is a scalar.
    """
    out: dict[str, ConfigValue] = {keys.POLICY_VERSION: int(version)}
    for name, value in policy.to_dict().items():
        out[keys.POLICY_PREFIX + _kebab(name)] = value
    for device_class, changes in overrides.items():
        for name, value in changes.items():
            if name not in _POLICY_FIELDS:
                raise PolicyError(
                    f"Invalid precision policy: unknown field '{name}' in the "
                    f"override of device class '{device_class}'."
                )
            if value is not None:
                out[f"{keys.OVERRIDE_PREFIX}{device_class}.{_kebab(name)}"] = value
    return out


def policy_from_config(config: Mapping[str, Any]) -> tuple[int, PrecisionPolicy, Overrides]:
    """Inverse of :func:`policy_to_config`: (version, fleet policy, per-class overrides)."""
    by_kebab = {_kebab(n): n for n in _POLICY_FIELDS}
    base: dict[str, Any] = {}
    overrides: Overrides = {}
    for key, value in config.items():
        if key.startswith(keys.POLICY_PREFIX):
            name = key[len(keys.POLICY_PREFIX) :]
            if name not in by_kebab:
                raise PolicyError(f"Invalid precision policy: unknown field '{name}'.")
            base[by_kebab[name]] = value
        elif key.startswith(keys.OVERRIDE_PREFIX):
            device_class, _, name = key[len(keys.OVERRIDE_PREFIX) :].rpartition(".")
            if name not in by_kebab or not device_class:
                raise PolicyError(
                    f"Invalid precision policy: override key '{key}' does not "
                    "name a device class and a policy field."
                )
            overrides.setdefault(device_class, {})[by_kebab[name]] = value
    return int(config.get(keys.POLICY_VERSION, 0)), PrecisionPolicy.from_dict(base), overrides


def effective_policy(
    policy: PrecisionPolicy, overrides: Mapping[str, Mapping[str, Any]], device_class: str
) -> PrecisionPolicy:
    """The policy a device of ``device_class`` trains with (its override applied).

    Raises
    ------
    PolicyError
        If the override names an unknown field or yields an invalid policy.
    """
    changes = dict(overrides.get(device_class) or {})
    if not changes:
        return policy
    unknown = sorted(set(changes) - {f.name for f in fields(PrecisionPolicy)})
    if unknown:
        raise PolicyError(
            f"Invalid precision policy: unknown field '{unknown[0]}' in the "
            f"override of device class '{device_class}'."
        )
    return policy.with_(**changes)


@dataclass(frozen=True)
class RunSettings:
    """Settings every device of a federated run shares (sent in each round's config).

    Parameters
    ----------
    task : str (default: "digits")
    arch : str (default: "cnn")
    method : str (default: "apt")
        "apt", "fp32", "qat8" or "fp32-q8".
    local_epochs : int (default: 5)
    lr : float (default: 0.1)
        Constant local learning rate.
    batch_size : int (default: 16)
        (5 local epochs of batch 16 at lr 0.1: with 20 devices a digits partition is
        ~57 training samples, and 1 epoch of batch 32 barely moves fp32 FedAvg in 30
        rounds.)
    momentum : float (default: 0.9)
    weight_decay : float (default: 5e-4)
    alpha : float | None (default: 0.5)
        Dirichlet label skew of the partitions; None is IID (sent as 0.0).
    seed : int (default: 0)
    """

    task: str = "digits"
    arch: str = "cnn"
    method: str = "apt"
    local_epochs: int = 5
    lr: float = 0.1
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float | None = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in FED_METHODS:
            raise SettingsError(
                f"Invalid run settings: method={self.method!r} is not one of {FED_METHODS}."
            )
        for name in ("local_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise SettingsError(
                    f"Invalid run settings: {name}={getattr(self, name)!r} must be >= 1."
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SettingsError(f"Invalid run settings: lr={self.lr!r} must be a number > 0.")

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value, JSON-able; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSettings:
        """Settings from :meth:`to_dict` entries; a missing field takes its default.

        Raises
        ------
        SettingsError
            If an entry names no field of ``RunSettings``, or a value is invalid.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise SettingsError(
                f"Invalid run settings: {unknown[0]}={values[unknown[0]]!r} is not a run setting."
            )
        return cls(**values)

    def to_config(self) -> dict[str, ConfigValue]:
        """Flat config entries (kebab-case keys from :mod:`apt_core.federated.record_keys`)."""
        return {
            keys.TASK: self.task,
            keys.ARCH: self.arch,
            keys.METHOD: self.method,
            keys.LOCAL_EPOCHS: self.local_epochs,
            keys.LR: float(self.lr),
            keys.BATCH_SIZE: self.batch_size,
            keys.MOMENTUM: float(self.momentum),
            keys.WEIGHT_DECAY: float(self.weight_decay),
            keys.ALPHA: float(self.alpha) if self.alpha else 0.0,
            keys.SEED: self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunSettings:
        """Read the entries :meth:`to_config` wrote (missing ones take the defaults)."""
        d = cls()
        alpha = float(config.get(keys.ALPHA, d.alpha or 0.0))
        return cls(
            task=str(config.get(keys.TASK, d.task)),
            arch=str(config.get(keys.ARCH, d.arch)),
            method=str(config.get(keys.METHOD, d.method)),
            local_epochs=int(config.get(keys.LOCAL_EPOCHS, d.local_epochs)),
            lr=float(config.get(keys.LR, d.lr)),
            batch_size=int(config.get(keys.BATCH_SIZE, d.batch_size)),
            momentum=float(config.get(keys.MOMENTUM, d.momentum)),
            weight_decay=float(config.get(keys.WEIGHT_DECAY, d.weight_decay)),
            alpha=alpha if alpha > 0 else None,
            seed=int(config.get(keys.SEED, d.seed)),
        )


def round_seed(seed: int, partition_id: int, server_round: int) -> int:
    """Seed of one device's local round: distinct per device and round, reproducible."""
    return (seed * 1_000_003 + partition_id * 10_007 + server_round) % (2**31 - 1)
