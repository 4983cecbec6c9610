"""Device-class budgets in a run: each class's bit cap, folded into the round's policy.

A budget (:class:`apt_core.federated.budget.Budget`) says what a class of devices can
spend; the cap it allows depends on the run's model and local workload, so it is derived
per run (:class:`BudgetCapper`) and reaches the devices as the class's ``bits_max`` in the
round config, like any per-class override. All costs are modelled (``apt_core.cost``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.cost import LayerProfile, profile_layers
from apt_core.errors import BudgetError
from apt_core.federated.budget import Budget, Workload, capped_overrides, class_caps
from apt_core.federated.device_class import DEVICE_CLASS_PATTERN, DEVICE_CLASS_RULE
from apt_core.federated.record_keys import DEVICE_CLASS as DEVICE_CLASS_KEY
from apt_core.tasks.data import load_task
from server.flower.records import RoundReport

log = logging.getLogger(__name__)

#: Share of a device's partition it trains on (``client_split`` holds out the rest).
TRAIN_SHARE = 0.8

PolicyAnswer = tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]]


@lru_cache(maxsize=8)
def model_profiles(task: str, arch: str) -> dict[str, LayerProfile]:
    """The layer profile of the run's APT model (parameters, MACs, activations)."""
    model = fed.make_model(task, arch, "apt")
    return profile_layers(model, load_task(task).x_train[:2])


def run_workload(settings: fed.RunSettings, clients: int) -> Workload:
    """A mean device's local round: its share of the train set, the run's epochs and batch."""
    n_train = len(load_task(settings.task).x_train)
    samples = max(1, int(n_train / max(clients, 1) * TRAIN_SHARE))
    return Workload(batch_size=settings.batch_size, samples=samples, epochs=settings.local_epochs)


def parse_budgets(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, Budget]:
    """Stored budgets (class -> fields) as :class:`Budget` objects.

    Raises
    ------
    BudgetError
        Naming the class and the field of the first invalid budget.
    """
    out: dict[str, Budget] = {}
    for device_class, values in raw.items():
        try:
            out[device_class] = Budget.from_dict(values)
        except BudgetError as exc:
            raise BudgetError(f"Device class '{device_class}': {exc}") from None
    return out


@dataclass
class BudgetCapper:
    """Derives the class caps of one run (its model and workload) and folds them in."""

    task: str
    arch: str
    workload: Workload
    last_caps: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_run(cls, settings: fed.RunSettings, clients: int) -> BudgetCapper:
        """The capper of a run with ``settings`` over ``clients`` devices."""
        return cls(settings.task, settings.arch, run_workload(settings, clients))

    def caps(
        self,
        policy: PrecisionPolicy,
        overrides: Mapping[str, Mapping[str, Any]],
        budgets: Mapping[str, Budget],
    ) -> dict[str, int]:
        """Each budgeted class's cap; raises ``BudgetError`` naming an infeasible class."""
        profiles = model_profiles(self.task, self.arch)
        return class_caps(profiles, policy, overrides, budgets, self.workload)

    def answer(self, answer: PolicyAnswer, budgets: Mapping[str, Budget]) -> PolicyAnswer:
        """A provider's answer with the budgets' caps as the classes' ``bits_max``."""
        version, policy, overrides = answer
        if not budgets:
            return answer
        caps = self.caps(policy, overrides, budgets)
        if caps != self.last_caps:
            log.info("Budget caps (policy version %s): %s", version, caps)
            self.last_caps = caps
        return version, policy, capped_overrides(overrides, caps)


def budgeted_provider(
    provider: Callable[[], PolicyAnswer], budgets: Mapping[str, Budget], capper: BudgetCapper
) -> Callable[[], PolicyAnswer]:
    """``provider`` whose answers carry the caps of fixed ``budgets`` (the simulation's)."""
    _, policy, overrides = provider()
    capper.caps(policy, overrides, budgets)  # an infeasible budget fails here, not in round 1

    def answer() -> PolicyAnswer:
        return capper.answer(provider(), budgets)

    return answer


def parse_budget_option(spec: str) -> tuple[str, Budget]:
    """``CLASS=BYTES[:JOULES]`` (the CLI's ``--budget``) as (class, budget).

    Raises
    ------
    BudgetError
        Naming the option's value and what is wrong with it.
    """
    device_class, sep, rest = spec.partition("=")
    memory, _, energy = rest.partition(":")
    if not sep or not DEVICE_CLASS_PATTERN.match(device_class):
        raise BudgetError(
            f"--budget {spec!r}: expected CLASS=BYTES[:JOULES] with CLASS {DEVICE_CLASS_RULE}."
        )
    try:
        budget = Budget(int(memory), float(energy) if energy else None)
    except ValueError as exc:
        raise BudgetError(f"--budget {spec!r}: {exc}") from None
    return device_class, budget


def class_report(records: Iterable[RoundReport]) -> dict[str, dict[str, Any]]:
    """Per device class over a run: client-rounds, caps sent, energy, uplink, final bits.

    ``mean_bits`` is the parameter-unweighted mean over layers and trained client-rounds of
    the bits a device ended its round with (what it trained and uploaded at).
    """
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        for c in record.clients:
            row = out.setdefault(
                c.device_class,
                {
                    "client_rounds": 0,
                    "trained": 0,
                    "caps": set(),
                    "energy_j": 0.0,
                    "uplink_bytes": 0,
                    "bits": [],
                },
            )
            row["client_rounds"] += 1
            if c.bits_cap is not None:
                row["caps"].add(c.bits_cap)
            if c.failure is None and c.rejected is None:
                row["trained"] += 1
                row["energy_j"] += c.energy_j
                row["uplink_bytes"] += c.uplink_bytes
                row["bits"].extend(layer.bits for layer in c.layers)
    for row in out.values():
        bits = row.pop("bits")
        row["caps"] = sorted(row["caps"])
        row["mean_bits"] = sum(bits) / len(bits) if bits else None
    return out


def class_node_config(
    clients: int,
    device_classes: Sequence[str] | None,
    node_config: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Node config per partition id with ``device-class`` cycled over ``device_classes``.

    Entries of ``node_config`` are kept (and win over the cycled class).
    """
    out = {int(k): dict(v) for k, v in (node_config or {}).items()}
    classes = list(device_classes or [])
    for pid in range(clients) if classes else ():
        out[pid] = {DEVICE_CLASS_KEY: classes[pid % len(classes)], **out.get(pid, {})}
    return out


def with_budgets(
    provider: Callable[[], PolicyAnswer],
    budgets: Mapping[str, Budget] | None,
    settings: fed.RunSettings,
    clients: int,
) -> Callable[[], PolicyAnswer]:
    """``provider`` with the caps of ``budgets`` for a run of ``settings`` (as is without)."""
    if not budgets:
        return provider
    return budgeted_provider(provider, budgets, BudgetCapper.for_run(settings, clients))
