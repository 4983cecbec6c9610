"""One device's local round and model evaluation."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import Dataset

from apt_core.config import PrecisionPolicy
from apt_core.controller import PrecisionController
from apt_core.conversion import apt_layers, layer_bits
from apt_core.cost import activation_bits, model_nbytes, profile_layers, tensors_nbytes
from apt_core.federated.codec import float_state
from apt_core.federated.settings import FED_METHODS
from apt_core.methods import setup_method
from apt_core.optimizer import APTSGD
from apt_core.qat import to_qat
from apt_core.tasks.data import make_loader
from apt_core.trainer import evaluate, train
from apt_core.wire import pack


# --- one device's round -----------------------------------------------------------------
@dataclass
class LocalResult:
    """What one device's local round produced.

    ``payload`` is the packed model for apt (what the device uploads), ``state`` the
    float state dict for fp32/qat8. ``bits``/``exponents`` follow the ``apt_layers``
    order (empty for float methods). ``history`` holds this round's controller checks
    as dicts (step, layer, old_bits, bits, exponent, gavg, underflow).
    """

    model: nn.Module
    payload: bytes | None
    state: dict[str, Tensor] | None
    bits: dict[str, int]
    exponents: dict[str, int]
    history: list[dict[str, Any]]
    energy_j: float
    param_bytes: int
    peak_memory_bytes: int
    num_examples: int
    train_loss: float
    steps: int = 0
    uplink_bytes: int = 0


def local_round(
    model: nn.Module,
    train_set: Dataset,
    *,
    method: str,
    policy: PrecisionPolicy | None,
    device_bits: Mapping[str, int] | None,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
) -> LocalResult:
    """Train the global model on one device's data for one federated round.

    Parameters
    ----------
    model : nn.Module
        Holds the global weights: an APT model for apt (from :func:`make_model` and
        :func:`load_arrays`), a float model for fp32/qat8 (qat8 is converted here).
    train_set : Dataset
        The device's local training partition.
    method : str
        "apt", "fp32", "qat8" or "fp32-q8" (trains as fp32; only its wire differs).
    policy : PrecisionPolicy | None
        The device's effective policy (required for apt).
    device_bits : Mapping[str, int] | None
        Bits the device ended its previous round with; each layer is set to them
        (clamped into the policy range) after the global model is loaded. None on a
        device's first round: the global bits are kept, clamped into the range.
    epochs, lr, batch_size, momentum, weight_decay, seed
        Local training settings (constant learning rate within the round).

    Returns
    -------
    LocalResult

    Notes
    -----
    The controller window also closes at the end of the round: steps observed since the
    last check (fewer than ``check_every``) are judged then, so devices whose rounds are
    shorter than ``check_every`` steps still adapt once per round.
    """
    if method not in FED_METHODS:
        raise ValueError(f"method={method!r} is not one of {FED_METHODS}.")
    if method == "apt":
        if policy is None:
            raise ValueError("local_round: method='apt' needs a policy.")
        _start_bits(model, policy, device_bits)
    loader = make_loader(train_set, batch_size, shuffle=True, seed=seed)
    example = next(iter(loader))[0][:2]
    profiles = profile_layers(model, example)
    s = setup_method(
        "fp32" if method == "fp32-q8" else method,  # fp32-q8 trains in fp32
        model,
        profiles,
        policy=policy,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
    )
    m = train(
        s.model,
        loader,
        optimizer=s.optimizer,
        epochs=epochs,
        lr_schedule=lambda _: lr,
        controller=s.controller,
        meter=s.meter,
        eval_every_epoch=False,
    )
    history = list(m.history)
    if s.controller is not None:
        history += _close_window(s.controller, model, m.steps, history)
    act = policy.act_bits if method == "apt" and policy else 32
    param_bytes = model_nbytes(model)
    peak = (
        param_bytes
        + tensors_nbytes(_optimizer_state(s.optimizer))
        + activation_bits(profiles, batch_size, act) // 8
    )
    return _result(
        model,
        method,
        history,
        param_bytes=param_bytes,
        peak_memory_bytes=int(peak),
        energy_j=m.energy_j,
        num_examples=len(train_set),  # type: ignore[arg-type]
        train_loss=m.train_loss,
        steps=m.steps,
    )


def _result(
    model: nn.Module, method: str, history: list[dict[str, Any]], **measured: Any
) -> LocalResult:
    """The round's result: the trained model in its upload form, bits and ``measured``."""
    payload = pack(model) if method == "apt" else None
    state = None if method == "apt" else float_state(model)
    uplink = (
        len(payload)
        if payload is not None
        else sum(t.numel() * t.element_size() for t in (state or {}).values())
    )
    return LocalResult(
        model=model,
        payload=payload,
        state=state,
        bits=layer_bits(model),
        exponents={n: lay.exponent() for n, lay in apt_layers(model).items()},
        history=history,
        uplink_bytes=int(uplink),
        **measured,
    )


def _start_bits(
    model: nn.Module, policy: PrecisionPolicy, device_bits: Mapping[str, int] | None
) -> None:
    """Set each APT layer to the device's last bits, falling back to the global ones.

    Either is clamped into the policy's range.
    """
    for name, layer in apt_layers(model).items():
        b = device_bits.get(name, layer.n_bits) if device_bits else layer.n_bits
        layer.set_bits(min(max(int(b), policy.bits_min), policy.bits_max))


def _close_window(
    controller: PrecisionController, model: nn.Module, steps: int, history: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Judge the steps observed since the last check, at the end of the round.

    Returns the new history entries (none when the last check closed the round).
    """
    last = max((h["step"] for h in history), default=0)
    if steps <= last:
        return []
    layers = apt_layers(model)
    n_before = len(controller.history)
    new = controller.decide(steps, {n: (lay.n_bits, lay.exponent()) for n, lay in layers.items()})
    for n, b in new.items():
        layers[n].set_bits(b)
    return [h.to_dict() for h in controller.history[n_before:]]


def _optimizer_state(optimizer: APTSGD | Optimizer) -> list[Tensor]:
    """The tensors an optimizer keeps between steps (momentum buffers and the like)."""
    if isinstance(optimizer, APTSGD):
        return list(optimizer.state_tensors())
    return [v for st in optimizer.state.values() for v in st.values() if isinstance(v, Tensor)]


def evaluate_model(
    model: nn.Module, dataset: Dataset, method: str, batch_size: int = 256
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of a transport-form model on ``dataset``.

    qat8 is scored as deployed (8-bit fake-quantized weights and inputs).
    """
    if method == "qat8":
        model = to_qat(copy.deepcopy(model), 8)
    acc, loss = evaluate(model, make_loader(dataset, batch_size, shuffle=False, seed=0))
    return acc, (loss if math.isfinite(loss) else float("nan"))
