"""A thin training loop: model, data, optimizer, controller and cost meter are injected."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from apt_core.controller import PrecisionController
from apt_core.cost import CostMeter, mean_bits
from apt_core.layers import apt_layers, layer_bits
from apt_core.optimizer import APTSGD

Optimizer = APTSGD | torch.optim.Optimizer


@dataclass
class EpochLog:
    """One epoch of training."""

    epoch: int
    lr: float
    train_loss: float
    test_accuracy: float | None
    mean_bits: float | None
    underflow: float | None  # mean share of moving weights whose code did not change
    wall_s: float


@dataclass
class TrainMetrics:
    """What a training run produced."""

    accuracy: float | None
    loss: float | None
    train_loss: float
    epochs: int
    steps: int
    examples: int
    energy_j: float
    energy_gemm_j: float
    energy_move_j: float
    avg_bits: float | None
    final_bits: dict[str, int]
    final_exponents: dict[str, int]
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_log: list[EpochLog] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # process CPU time: robust to other jobs on a shared machine
    nonfinite_skips: int = 0
    overflow_shifts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def cosine_lr(base: float, total_steps: int, final_fraction: float = 0.01
              ) -> Callable[[int], float]:
    """Cosine decay from ``base`` to ``base * final_fraction`` over ``total_steps``."""
    def lr(step: int) -> float:
        t = min(step / max(total_steps, 1), 1.0)
        return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))
    return lr


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Accuracy (0..1) and mean cross-entropy of ``model`` on ``loader``."""
    was = model.training
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for x, y in loader:
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        total += y.numel()
    model.train(was)
    return correct / max(total, 1), loss / max(total, 1)


def _set_lr(optimizer: Optimizer, lr: float) -> None:
    if isinstance(optimizer, APTSGD):
        optimizer.lr = lr
    else:
        for g in optimizer.param_groups:
            g["lr"] = lr


def train(model: nn.Module, train_loader: DataLoader, *, optimizer: Optimizer, epochs: int,
          lr_schedule: Callable[[int], float], controller: PrecisionController | None = None,
          meter: CostMeter | None = None, test_loader: DataLoader | None = None,
          on_epoch: Callable[[EpochLog], None] | None = None,
          eval_every_epoch: bool = True) -> TrainMetrics:
    """Train ``model`` for ``epochs`` epochs; returns metrics.

    Parameters
    ----------
    model : nn.Module
        Float, QAT or APT model.
    train_loader : DataLoader
    optimizer : APTSGD | torch.optim.Optimizer
    epochs : int
    lr_schedule : Callable[[int], float]
        Learning rate of each global step.
    controller : PrecisionController | None (default: None)
        Adapts APT layer bits every K steps; its history lands in the metrics.
    meter : CostMeter | None (default: None)
        Charged once per step with the step's batch size and layer bits.
    test_loader : DataLoader | None (default: None)
    on_epoch : Callable[[EpochLog], None] | None (default: None)
        Progress hook.
    eval_every_epoch : bool (default: True)
        Evaluate after each epoch (else only at the end).
    """
    model.train()
    apt = isinstance(optimizer, APTSGD)
    layers = apt_layers(model)
    step, examples = 0, 0
    history_start = len(controller.history) if controller else 0
    log: list[EpochLog] = []
    last_loss = float("nan")
    t_start = time.perf_counter()
    c_start = time.process_time()
    bits = layer_bits(model) if layers else None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        loss_sum, n_sum, under_sum, under_n = 0.0, 0, 0.0, 0
        for x, y in train_loader:
            lr = lr_schedule(step)
            _set_lr(optimizer, lr)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            stats = optimizer.step()
            if meter is not None:
                meter.step(x.shape[0], bits)
            if apt and stats:
                under_sum += sum(s.underflow for s in stats.values()) / len(stats)
                under_n += 1
            if controller is not None and stats is not None:
                controller.observe(stats)
                if controller.due():
                    new = controller.decide(step + 1, {n: (m.n_bits, m.exponent())
                                                       for n, m in layers.items()})
                    for n, b in new.items():
                        layers[n].set_bits(b)
                    bits = layer_bits(model)
            step += 1
            examples += x.shape[0]
            loss_sum += float(loss.detach()) * x.shape[0]
            n_sum += x.shape[0]
        optimizer.zero_grad()
        last_loss = loss_sum / max(n_sum, 1)
        acc = None
        if test_loader is not None and (eval_every_epoch or epoch == epochs - 1):
            acc, _ = evaluate(model, test_loader)
        entry = EpochLog(epoch + 1, lr_schedule(step), last_loss, acc,
                         mean_bits(meter.profiles, bits) if meter is not None and bits else None,
                         under_sum / under_n if under_n else None, time.perf_counter() - t0)
        log.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    acc, test_loss = (evaluate(model, test_loader) if test_loader is not None
                      else (None, None))
    energy = meter.energy if meter is not None else None
    return TrainMetrics(
        accuracy=acc, loss=test_loss, train_loss=last_loss, epochs=epochs, steps=step,
        examples=examples,
        energy_j=energy.total_j if energy else 0.0,
        energy_gemm_j=energy.gemm_j if energy else 0.0,
        energy_move_j=energy.move_j if energy else 0.0,
        avg_bits=meter.avg_bits if meter is not None and layers else None,
        final_bits=layer_bits(model),
        final_exponents={n: m.exponent() for n, m in layers.items()},
        history=[h.to_dict() for h in controller.history[history_start:]] if controller else [],
        epoch_log=log, wall_s=time.perf_counter() - t_start,
        cpu_s=time.process_time() - c_start,
        nonfinite_skips=sum(optimizer.nonfinite_skips.values()) if apt else 0,  # type: ignore[union-attr]
        overflow_shifts=sum(optimizer.overflow_shifts.values()) if apt else 0)  # type: ignore[union-attr]

