"""Tests for the peak training memory meter."""

import numpy as np
import torch
from torch import nn

from apt_core.bench.memory import peak_train_bytes, tensor_bytes

MIB = 1 << 20


def test_peak_train_bytes_two_live_tensors_exact() -> None:
    # Prepare
    def step() -> None:
        a = torch.empty(MIB, dtype=torch.uint8)
        b = torch.empty(2 * MIB, dtype=torch.uint8)
        del a, b
        c = torch.empty(MIB // 2, dtype=torch.uint8)  # smaller, after both are gone
        del c

    # Execute
    mem = peak_train_bytes(step)

    # Assert
    assert mem.step_peak_bytes == 3 * MIB
    assert mem.peak_train_bytes == 3 * MIB
    assert mem.retained_bytes == 0
    assert mem.unmatched_frees == 0


def test_peak_train_bytes_sequential_tensors_do_not_add() -> None:
    # Prepare
    def step() -> None:
        a = torch.empty(2 * MIB, dtype=torch.uint8)
        del a
        b = torch.empty(MIB, dtype=torch.uint8)
        del b

    # Execute
    mem = peak_train_bytes(step)

    # Assert
    assert mem.step_peak_bytes == 2 * MIB


def test_peak_train_bytes_adds_baseline_and_keeps_retained() -> None:
    # Prepare
    weight = torch.zeros(MIB // 4)  # 1 MiB of float32
    kept: list[torch.Tensor] = []

    def step() -> None:
        kept.append(torch.empty(MIB, dtype=torch.uint8))
        t = torch.empty(3 * MIB, dtype=torch.uint8)
        del t

    # Execute
    mem = peak_train_bytes(step, baseline=[weight, weight[:10], None])

    # Assert
    assert mem.baseline_bytes == MIB  # the view shares its storage: counted once
    assert mem.peak_train_bytes == MIB + 4 * MIB
    assert mem.retained_bytes == MIB


def test_peak_train_bytes_prime_makes_state_replacement_visible() -> None:
    # Prepare: like a momentum buffer, the state is replaced by a new tensor every step
    state = {"m": torch.empty(MIB, dtype=torch.uint8)}  # allocated before profiling

    def step() -> None:
        state["m"] = torch.empty(MIB, dtype=torch.uint8)  # the old one is freed here
        t = torch.empty(2 * MIB, dtype=torch.uint8)
        del t

    # Execute
    unprimed = peak_train_bytes(step, baseline=lambda: [state["m"]])
    state["m"] = torch.empty(MIB, dtype=torch.uint8)
    primed = peak_train_bytes(step, baseline=lambda: [state["m"]], prime=step)

    # Assert: true peak = 1 MiB state + 2 MiB transient
    assert primed.peak_train_bytes == 3 * MIB
    assert primed.retained_bytes == 0
    assert primed.unmatched_frees == 0
    # the old state's free is invisible without the prime: the overstatement it removes
    assert unprimed.peak_train_bytes == 4 * MIB


def test_peak_train_bytes_reports_numpy_separately() -> None:
    # Prepare
    def step() -> None:
        a = np.ones(4 * MIB, dtype=np.uint8)
        del a

    # Execute
    mem = peak_train_bytes(step)

    # Assert
    assert 4 * MIB <= mem.numpy_peak_bytes < 5 * MIB
    assert mem.step_peak_bytes == 0


def test_peak_train_bytes_fp32_mlp_at_least_params_grads_momentum() -> None:
    # Prepare
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    params = list(model.parameters())
    param_bytes = sum(p.numel() * 4 for p in params)

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def prime() -> None:
        step()
        opt.zero_grad()

    def baseline() -> list[torch.Tensor]:
        momenta = [s["momentum_buffer"] for s in opt.state.values()]
        return [*params, *momenta, x, y]

    # Execute
    mem = peak_train_bytes(step, baseline=baseline, prime=prime)

    # Assert: parameters, momentum (both in the baseline) and gradients (made by the step)
    # are alive together at the optimizer step
    assert mem.baseline_bytes == 2 * param_bytes + tensor_bytes([x, y])
    assert mem.peak_train_bytes >= 3 * param_bytes
    assert mem.retained_bytes >= param_bytes  # the gradients outlive the step
    assert mem.unmatched_frees == 0
