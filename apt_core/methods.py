"""The training methods compared side by side: fp32, qat8, fixedN and apt."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from apt_core.config import PrecisionPolicy, fixed_policy
from apt_core.controller import PrecisionController
from apt_core.conversion import to_apt
from apt_core.cost import CostMeter, LayerProfile
from apt_core.optimizer import APTSGD
from apt_core.qat import to_qat

METHODS = ("fp32", "qat8", "fixed8", "fixed12", "fixed16", "apt")


@dataclass
class MethodSetup:
    """A model converted for one method, with its optimizer, controller and meter."""

    method: str
    model: nn.Module
    optimizer: APTSGD | torch.optim.Optimizer
    controller: PrecisionController | None
    meter: CostMeter
    policy: PrecisionPolicy | None


def setup_method(
    method: str,
    model: nn.Module,
    profiles: dict[str, LayerProfile],
    *,
    policy: PrecisionPolicy | None = None,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    momentum_format: str = "int8",
    seed: int = 0,
) -> MethodSetup:
    """Convert a float ``model`` in place for ``method`` and build what trains it.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    model : nn.Module
        A fresh float model.
    profiles : dict[str, LayerProfile]
        The model's layer profiles (for the cost meter).
    policy : PrecisionPolicy | None (default: None -> PrecisionPolicy())
        The apt precision policy (ignored by the other methods).
    lr, momentum, weight_decay : float
        The optimizer settings every method shares.
    momentum_format : str (default: "int8")
        Momentum storage of the integer methods (fixedN, apt).
    seed : int (default: 0)
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}.")
    if method in ("fp32", "qat8"):
        if method == "qat8":
            to_qat(model, 8)
        opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        meter = CostMeter(profiles, kind=method, state_bits=32 if momentum else 0)
        return MethodSetup(method, model, opt, None, meter, None)
    pol = (
        fixed_policy(int(method[5:]))
        if method.startswith("fixed")
        else (policy or PrecisionPolicy())
    )
    to_apt(model, pol)
    aptopt = APTSGD(
        model,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        rounding=pol.rounding,
        momentum_format=momentum_format,
        seed=seed,
    )
    meter = CostMeter(
        profiles,
        kind="fixed",
        act_bits=pol.act_bits,
        err_bits=pol.err_bits,
        state_bits=aptopt.state_bits_per_param(),
    )
    return MethodSetup(method, model, aptopt, PrecisionController(pol), meter, pol)
