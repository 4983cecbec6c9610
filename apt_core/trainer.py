"""A thin training loop: model, data, optimizer, controller and cost meter are injected."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from apt_core.controller import PrecisionController
from apt_core.conversion import apt_layers, layer_bits
from apt_core.cost import CostMeter, mean_bits
from apt_core.optimizer import APTSGD, LayerStepStats

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


def cosine_lr(
    base: float, total_steps: int, final_fraction: float = 0.01
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


def train(
    model: nn.Module,
    train_loader: DataLoader,
    *,
    optimizer: Optimizer,
    epochs: int,
    lr_schedule: Callable[[int], float],
    controller: PrecisionController | None = None,
    meter: CostMeter | None = None,
    test_loader: DataLoader | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    eval_every_epoch: bool = True,
) -> TrainMetrics:
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
    loop = _Loop(model, optimizer, lr_schedule, controller, meter)
    history_start = len(controller.history) if controller else 0
    log: list[EpochLog] = []
    last_loss = float("nan")
    t_start = time.perf_counter()
    c_start = time.process_time()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        last_loss, underflow = loop.epoch(train_loader)
        acc = None
        if test_loader is not None and (eval_every_epoch or epoch == epochs - 1):
            acc, _ = evaluate(model, test_loader)
        entry = EpochLog(
            epoch + 1,
            lr_schedule(loop.step),
            last_loss,
            acc,
            mean_bits(meter.profiles, loop.bits) if meter is not None and loop.bits else None,
            underflow,
            time.perf_counter() - t0,
        )
        log.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    acc, test_loss = evaluate(model, test_loader) if test_loader is not None else (None, None)
    return loop.metrics(
        accuracy=acc,
        loss=test_loss,
        train_loss=last_loss,
        epochs=epochs,
        history=[h.to_dict() for h in controller.history[history_start:]] if controller else [],
        epoch_log=log,
        wall_s=time.perf_counter() - t_start,
        cpu_s=time.process_time() - c_start,
    )


class _Loop:
    """The steps of one training run: what it injected and what it has counted so far."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        lr_schedule: Callable[[int], float],
        controller: PrecisionController | None,
        meter: CostMeter | None,
    ) -> None:
        self.model, self.optimizer, self.lr_schedule = model, optimizer, lr_schedule
        self.controller, self.meter = controller, meter
        self.apt = isinstance(optimizer, APTSGD)
        self.layers = apt_layers(model)
        self.bits = layer_bits(model) if self.layers else None
        self.step, self.examples = 0, 0

    def epoch(self, loader: DataLoader) -> tuple[float, float | None]:
        """One pass over ``loader``: (mean training loss, mean underflow share or None)."""
        loss_sum, n_sum, under_sum, under_n = 0.0, 0, 0.0, 0
        for x, y in loader:
            loss, underflow = self._step(x, y)
            if underflow is not None:
                under_sum += underflow
                under_n += 1
            loss_sum += loss * x.shape[0]
            n_sum += x.shape[0]
        self.optimizer.zero_grad()
        return loss_sum / max(n_sum, 1), under_sum / under_n if under_n else None

    def metrics(self, **measured: Any) -> TrainMetrics:
        """The run's metrics: ``measured`` plus what this loop counted.

        This loop adds the counts, energy, bits and optimizer events it knows.
        """
        energy = self.meter.energy if self.meter is not None else None
        optimizer = self.optimizer if isinstance(self.optimizer, APTSGD) else None
        return TrainMetrics(
            steps=self.step,
            examples=self.examples,
            energy_j=energy.total_j if energy else 0.0,
            energy_gemm_j=energy.gemm_j if energy else 0.0,
            energy_move_j=energy.move_j if energy else 0.0,
            avg_bits=self.meter.avg_bits if self.meter is not None and self.layers else None,
            final_bits=layer_bits(self.model),
            final_exponents={n: m.exponent() for n, m in self.layers.items()},
            nonfinite_skips=sum(optimizer.nonfinite_skips.values()) if optimizer else 0,
            overflow_shifts=sum(optimizer.overflow_shifts.values()) if optimizer else 0,
            **measured,
        )

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
        """One optimizer step: (batch loss, the step's mean underflow share for APT)."""
        _set_lr(self.optimizer, self.lr_schedule(self.step))
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        stats = self.optimizer.step()
        if self.meter is not None:
            self.meter.step(x.shape[0], self.bits)
        underflow = (
            sum(s.underflow for s in stats.values()) / len(stats) if self.apt and stats else None
        )
        if self.controller is not None and stats is not None:
            self._control(self.controller, stats)
        self.step += 1
        self.examples += x.shape[0]
        return float(loss.detach()), underflow

    def _control(
        self, controller: PrecisionController, stats: Mapping[str, LayerStepStats]
    ) -> None:
        """Let the controller observe the step and, when a check is due, set new bits."""
        controller.observe(stats)
        if controller.due():
            new = controller.decide(
                self.step + 1, {n: (m.n_bits, m.exponent()) for n, m in self.layers.items()}
            )
            for n, b in new.items():
                self.layers[n].set_bits(b)
            self.bits = layer_bits(self.model)
