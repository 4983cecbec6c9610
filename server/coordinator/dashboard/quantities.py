"""What each figure on the dashboard is: a human name, a unit, and measured or modelled.

Bytes, times, memory and accuracy are *measured*: devices and the coordinator count them
as they happen. Energy is *modelled*: operation counts priced with the cited 45 nm
constants of ``apt_core.cost`` (the cost-model page shows them), never a power reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.coordinator.dashboard.markup import Markup, fmt

Basis = Literal["measured", "modelled", "computed"]

#: The page describing the energy model and its citations.
COST_MODEL_PATH = "/cost-model"


@dataclass(frozen=True)
class Quantity:
    """One kind of figure.

    Parameters
    ----------
    name : str
        Human name, e.g. ``"Uplink traffic"``.
    unit : str
        Unit symbol shown beside values and in axis labels (``"B"``, ``"J"``, ``"%"``).
    basis : Basis
        ``measured`` (counted as it happened), ``modelled`` (cost model) or ``computed``
        (arithmetic on known sizes, e.g. 4 bytes per fp32 parameter).
    how : str
        One sentence on where the figure comes from (the tag's tooltip).
    short : str
        Lower-case short name for chart axes.
    """

    name: str
    unit: str
    basis: Basis
    how: str
    short: str


QUANTITIES: dict[str, Quantity] = {
    "accuracy": Quantity(
        "Global test accuracy",
        "%",
        "measured",
        "The aggregated global model evaluated on the task's held-out test set.",
        short="accuracy",
    ),
    "loss": Quantity(
        "Global test loss",
        "",
        "measured",
        "Cross-entropy of the global model on the test set.",
        short="loss",
    ),
    "energy": Quantity(
        "Client training energy",
        "J",
        "modelled",
        "Operation counts of the devices' local training priced with Horowitz's 45 nm "
        "energies (apt_core.cost); not a power-meter reading.",
        short="energy",
    ),
    "uplink_bytes": Quantity(
        "Uplink traffic (devices to coordinator)",
        "B",
        "measured",
        "Bytes of the model updates the devices sent.",
        short="uplink",
    ),
    "downlink_bytes": Quantity(
        "Downlink traffic (coordinator to devices)",
        "B",
        "measured",
        "Bytes of the global models sent to the devices.",
        short="downlink",
    ),
    "parameter_memory": Quantity(
        "Parameter memory on a device",
        "B",
        "measured",
        "Bytes of the packed parameters a device holds, averaged over trained replies.",
        short="parameter memory",
    ),
    "peak_memory": Quantity(
        "Peak training memory on a device",
        "B",
        "measured",
        "The largest memory a device's local round used, as it reported.",
        short="peak memory",
    ),
    "bits": Quantity(
        "Bits per weight",
        "bits",
        "measured",
        "The bit-width each layer held at the end of the round, as the devices reported.",
        short="bits",
    ),
    "time": Quantity(
        "Time", "UTC", "measured", "Wall-clock time recorded by the coordinator.", short="time"
    ),
}


def basis_tag(basis: Basis) -> Markup:
    """A small tag saying how a figure was obtained; ``modelled`` links to the cost model."""
    if basis == "modelled":
        return fmt(
            '<a class="tag modelled" href="{href}#energy" title="{title}">modelled</a>',
            href=COST_MODEL_PATH,
            title="Estimated by the energy cost model: see its constants and citation.",
        )
    title = {
        "measured": "Counted as it happened (devices and coordinator).",
        "computed": "Arithmetic on known sizes (4 bytes per fp32 parameter).",
    }[basis]
    return fmt('<span class="tag {basis}" title="{title}">{basis}</span>', basis=basis, title=title)


def quantity_label(key: str, *, with_unit: bool = True) -> Markup:
    """``Name (unit) [tag]`` for ``key`` of ``QUANTITIES`` (an unknown key is shown as is)."""
    quantity = QUANTITIES.get(key)
    if quantity is None:
        return fmt("{key}", key=key)
    unit = f" ({quantity.unit})" if with_unit and quantity.unit else ""
    return fmt(
        '<span title="{how}">{name}{unit}</span> {tag}',
        how=quantity.how,
        name=quantity.name,
        unit=unit,
        tag=basis_tag(quantity.basis),
    )


def axis_label(key: str) -> str:
    """Axis text for ``key``: ``Client training energy (J, modelled)``."""
    quantity = QUANTITIES[key]
    unit = f"{quantity.unit}, " if quantity.unit else ""
    return f"{quantity.short} ({unit}{quantity.basis})"
