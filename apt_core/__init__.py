"""apt_core: Adaptive Precision Training in pure PyTorch.

Layers keep their weights only as integer codes (no float master copy), the optimizer
writes the update straight into those codes, and a controller moves each layer's
bit-width with how well it can still learn. ``import apt_core`` loads torch and numpy
only; the federated protocol (:mod:`apt_core.federated`), the tasks
(:mod:`apt_core.tasks`) and the benchmark (:mod:`apt_core.bench`) are subpackages.

>>> from apt_core import PrecisionPolicy, to_apt, APTSGD, PrecisionController
"""

from apt_core.config import NAMED_POLICIES, PrecisionPolicy, fixed_policy, resolve_policy
from apt_core.controller import PrecisionCheck, PrecisionController
from apt_core.conversion import apt_layers, layer_bits, to_apt, to_float
from apt_core.cost import CostMeter, EnergyConstants, profile_layers, step_energy
from apt_core.errors import (
    APTError,
    BudgetError,
    DataError,
    ModelError,
    PackError,
    PolicyError,
    ReplyError,
    SettingsError,
)
from apt_core.layers import APTConv1d, APTConv2d, APTLayer, APTLinear
from apt_core.optimizer import APTSGD, LayerStepStats
from apt_core.packing import PackedTensor, pack_bits, pack_tensors, unpack_bits, unpack_tensors
from apt_core.quant import dequantize, quantize, stochastic_round
from apt_core.wire import pack, unpack

__all__ = [
    "APTSGD",
    "NAMED_POLICIES",
    "APTConv1d",
    "APTConv2d",
    "APTError",
    "APTLayer",
    "APTLinear",
    "BudgetError",
    "CostMeter",
    "DataError",
    "EnergyConstants",
    "LayerStepStats",
    "ModelError",
    "PackError",
    "PackedTensor",
    "PolicyError",
    "PrecisionCheck",
    "PrecisionController",
    "PrecisionPolicy",
    "ReplyError",
    "SettingsError",
    "apt_layers",
    "dequantize",
    "fixed_policy",
    "layer_bits",
    "pack",
    "pack_bits",
    "pack_tensors",
    "profile_layers",
    "quantize",
    "resolve_policy",
    "step_energy",
    "stochastic_round",
    "to_apt",
    "to_float",
    "unpack",
    "unpack_bits",
    "unpack_tensors",
]
