"""Tests of the energy and memory cost model against hand-computed numbers (apt_core.cost)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from apt_core.config import PrecisionPolicy
from apt_core.conversion import apt_layers, to_apt
from apt_core.cost import (
    HOROWITZ_45NM,
    PJ,
    CostMeter,
    EnergyTotals,
    LayerProfile,
    activation_bits,
    mean_bits,
    model_nbytes,
    param_bits,
    profile_layers,
    step_energy,
    tensors_nbytes,
)
from tests.utils.torch_threads import single_thread

BATCH = 5
MEM_PJ_PER_BIT = 2600.0 / 64  # 40.625 pJ: DRAM, 64 bits for 2.6 nJ


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


class _Tiny(nn.Module):
    """Linear(4, 3) -> view as 1x3 -> Conv1d(1, 2, kernel 2) -> 2x2 per sample."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
        self.conv = nn.Conv1d(1, 2, kernel_size=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.fc(x).unsqueeze(1)).flatten(1)


# Hand-derived profile of _Tiny:
#   fc:   params 4*3 + 3 = 15, MACs 3 outputs * 4 inputs = 12, first layer -> no input grad,
#         4 input activations per sample
#   conv: params 2*1*2 + 2 = 6, MACs (2 channels * 2 positions) * (1 * 2) = 8, input grad,
#         3 input activations per sample
EXPECTED_PROFILES = {
    "fc": LayerProfile("fc", params=15, macs=12, input_grad=False, act_numel=4),
    "conv": LayerProfile("conv", params=6, macs=8, input_grad=True, act_numel=3),
}


def _example() -> Tensor:
    return torch.randn(BATCH, 4, generator=torch.Generator().manual_seed(0))


def test_profile_layers_counts_params_macs_and_input_grad() -> None:
    # Execute
    profiles = profile_layers(_Tiny(), _example())

    # Assert
    assert profiles == EXPECTED_PROFILES


def test_profile_layers_same_for_converted_model_in_train_mode() -> None:
    # Prepare
    model = to_apt(_Tiny()).train()

    # Execute
    profiles = profile_layers(model, _example())

    # Assert
    assert profiles == EXPECTED_PROFILES
    assert all(m.live("weight") is None for m in apt_layers(model).values())


def test_profile_layers_same_for_converted_model_in_eval_mode() -> None:
    # Prepare
    model = to_apt(_Tiny()).eval()

    # Execute
    profiles = profile_layers(model, _example())

    # Assert
    assert profiles == EXPECTED_PROFILES


def test_energy_constants_match_horowitz() -> None:
    # Execute / Assert: int8 MAC = 0.2 pJ mult + 0.1 pJ int32 add
    assert HOROWITZ_45NM.int_mac_pj(8, 8) == pytest.approx(0.3)
    assert HOROWITZ_45NM.int_mac_pj(16, 16) == pytest.approx(0.2 * 256 / 64 + 0.1)
    assert HOROWITZ_45NM.fp32_mac_pj == pytest.approx(3.7 + 0.9)
    assert HOROWITZ_45NM.mem_pj_per_bit == pytest.approx(MEM_PJ_PER_BIT)


def test_step_energy_fp32_matches_hand_computation() -> None:
    # Prepare
    fc_macs, conv_macs = 12 * BATCH, 8 * BATCH  # 60, 40
    # fc: forward + weight-grad GEMM (no input grad); conv: all three, at 4.6 pJ per MAC
    gemm_pj = (2 * fc_macs) * 4.6 + (2 * conv_macs + conv_macs) * 4.6  # 552 + 552
    # every parameter and its 32-bit momentum read + written: 2*32 + 2*32 bits
    move_pj = (15 + 6) * (2 * 32 + 2 * 32) * MEM_PJ_PER_BIT  # 2688 bits

    # Execute
    e = step_energy(EXPECTED_PROFILES, BATCH, "fp32", state_bits=32)

    # Assert
    assert gemm_pj == pytest.approx(1104.0)
    assert e.gemm_j == pytest.approx(gemm_pj * PJ)
    assert e.move_j == pytest.approx(move_pj * PJ)
    assert e.total_j == pytest.approx((1104.0 + 109_200.0) * PJ)


def test_step_energy_qat8_matches_hand_computation() -> None:
    # Prepare
    fc_macs, conv_macs = 60, 40
    # forward int8 x int8 (0.3 pJ); weight-grad and input-grad GEMMs in fp32 (4.6 pJ)
    gemm_pj = (fc_macs * 0.3 + fc_macs * 4.6) + (conv_macs * 0.3 + (conv_macs + conv_macs) * 4.6)
    # fp32 master + 8-bit copy + 32-bit momentum, each read and written
    move_pj = (15 + 6) * (2 * 32 + 2 * 8 + 2 * 32) * MEM_PJ_PER_BIT

    # Execute
    e = step_energy(EXPECTED_PROFILES, BATCH, "qat8", state_bits=32)

    # Assert
    assert gemm_pj == pytest.approx(294.0 + 380.0)
    assert move_pj == pytest.approx(3024 * 40.625)
    assert e.gemm_j == pytest.approx(gemm_pj * PJ)
    assert e.move_j == pytest.approx(move_pj * PJ)


def test_step_energy_fixed_matches_hand_computation() -> None:
    # Prepare: fc at 6 bits, conv at 10 bits, 8-bit activations and errors, int8 momentum
    bits = {"fc": 6, "conv": 10}
    mac_8x6 = 0.2 * 8 * 6 / 64 + 0.1  # 0.25 pJ
    mac_8x8 = 0.2 * 8 * 8 / 64 + 0.1  # 0.30 pJ
    mac_8x10 = 0.2 * 8 * 10 / 64 + 0.1  # 0.35 pJ
    # forward act x w, input-grad err x w (conv only), weight-grad err x act
    fc_pj = 60 * mac_8x6 + 60 * mac_8x8  # 15 + 18
    conv_pj = 40 * mac_8x10 + 40 * mac_8x10 + 40 * mac_8x8  # 14 + 14 + 12
    move_bits = 15 * (2 * 6 + 2 * 8) + 6 * (2 * 10 + 2 * 8)  # 420 + 216

    # Execute
    e = step_energy(
        EXPECTED_PROFILES, BATCH, "fixed", bits=bits, act_bits=8, err_bits=8, state_bits=8
    )

    # Assert
    assert fc_pj + conv_pj == pytest.approx(73.0)
    assert e.gemm_j == pytest.approx((fc_pj + conv_pj) * PJ)
    assert e.move_j == pytest.approx(move_bits * MEM_PJ_PER_BIT * PJ)
    assert e.move_j == pytest.approx(25_837.5 * PJ)


def test_step_energy_fixed_without_bits_raises() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="bits of layer 'conv' are required"):
        step_energy(EXPECTED_PROFILES, BATCH, "fixed", bits={"fc": 8})


def test_step_energy_unknown_kind_raises() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="kind='int4'"):
        step_energy(EXPECTED_PROFILES, BATCH, "int4")


def test_cost_meter_accumulates_energy_and_parameter_weighted_bits() -> None:
    # Prepare
    meter = CostMeter(EXPECTED_PROFILES, kind="fixed", state_bits=8)
    first, second = {"fc": 6, "conv": 10}, {"fc": 8, "conv": 8}

    # Execute
    e1 = meter.step(BATCH, first)
    e2 = meter.step(BATCH, second)

    # Assert: (15*6 + 6*10) / 21 = 150/21 bits, then 8 bits
    assert meter.steps == 2
    assert meter.avg_bits == pytest.approx((150 / 21 + 8) / 2)
    assert meter.energy.total_j == pytest.approx(e1.total_j + e2.total_j)
    assert meter.energy.gemm_j == pytest.approx(e1.gemm_j + e2.gemm_j)


def test_cost_meter_float_kind_counts_32_bits() -> None:
    # Prepare
    meter = CostMeter(EXPECTED_PROFILES, kind="fp32")

    # Execute
    before = meter.avg_bits
    meter.step(BATCH)

    # Assert
    assert math.isnan(before)
    assert meter.avg_bits == 32.0
    assert meter.energy.total_j > 0


def test_mean_param_and_activation_bits() -> None:
    # Prepare
    bits = {"fc": 6, "conv": 10}

    # Execute / Assert
    assert mean_bits(EXPECTED_PROFILES, bits) == pytest.approx(150 / 21)
    assert param_bits(EXPECTED_PROFILES, bits) == 15 * 6 + 6 * 10
    assert param_bits(EXPECTED_PROFILES, 8) == 21 * 8
    assert activation_bits(EXPECTED_PROFILES, BATCH, 8) == (4 + 3) * BATCH * 8


def test_energy_totals_total_is_gemm_plus_move() -> None:
    # Execute / Assert
    assert EnergyTotals(gemm_j=1.5, move_j=2.0).total_j == 3.5


def test_tensors_nbytes_counts_shared_storage_once() -> None:
    # Prepare
    a = torch.zeros(10)  # 40 bytes
    b = torch.zeros(3, dtype=torch.int16)  # 6 bytes

    # Execute
    n = tensors_nbytes([a, a, a.view(2, 5), b, torch.zeros(0)])

    # Assert
    assert n == 40 + 6


def test_tensors_nbytes_view_before_base_counts_whole_storage() -> None:
    # Prepare
    a = torch.zeros(10)

    # Execute
    n = tensors_nbytes([a[:5], a])

    # Assert
    assert n == 40


def test_model_nbytes_float_model_is_four_bytes_per_parameter() -> None:
    # Execute / Assert
    assert model_nbytes(_Tiny()) == (15 + 6) * 4


def test_model_nbytes_apt_model_is_gemm_ready_codes_plus_small_buffers() -> None:
    # Prepare: fc 64x32 (+32 bias) at 5 bits, conv 16x8x5 (+16 bias) at 11 bits
    model = to_apt(
        nn.Sequential(
            nn.Linear(64, 32), nn.Unflatten(1, (8, 4)), nn.Conv1d(8, 16, kernel_size=5, padding=2)
        ),
        PrecisionPolicy(bits_init=8),
    )
    layers = apt_layers(model)
    layers["0"].set_bits(5)
    layers["2"].set_bits(11)
    sizes = [(2048, 32, 5), (640, 16, 11)]  # (weight, bias, bits)

    # Execute
    measured = model_nbytes(model)

    # Assert: in memory the codes are GEMM-ready (issue 9): one int8 per code up to 8 bits,
    # two int8 limbs from 9 to 16 bits; exact-bit packing is for the wire only. Plus bits,
    # weight_exp, bias_exp (int32 each).
    gemm_ready = sum((nw + nb) * (1 if b <= 8 else 2) for nw, nb, b in sizes)
    assert gemm_ready == (2048 + 32) + 2 * (640 + 16)
    assert measured == gemm_ready + 3 * 4 * len(sizes)
    ideal = sum((nw + nb) * b / 8 for nw, nb, b in sizes)
    assert measured <= 1.6 * ideal
