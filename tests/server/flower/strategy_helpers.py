"""Helpers of the APTFedAvg tests: a strategy on digits/mlp and client models."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.conversion import apt_layers
from apt_core.federated import record_keys as keys
from apt_core.packing import unpack_tensors
from server.flower.records import RoundReport
from server.flower.strategy import APTFedAvg

POLICY = PrecisionPolicy(bits_min=4, bits_max=12, check_every=5)


def _strategy(
    method: str = "apt", records: list[RoundReport] | None = None, version: int = 1
) -> APTFedAvg:
    sink = records if records is not None else []
    return APTFedAvg(
        settings=fed.RunSettings(task="digits", arch="mlp", method=method),
        policy_provider=lambda: (version, POLICY, {"mcu": {"bits_max": 8}}),
        recorder=sink.append,
        evaluator=lambda m: (0.5, 1.0),
        min_available_nodes=1,
        min_train_nodes=1,
    )


def _client_model(seed: int, bits: list[int]) -> torch.nn.Module:
    model = fed.make_model("digits", "mlp", "apt", POLICY, seed=seed)
    for layer, b in zip(apt_layers(model).values(), bits, strict=True):
        layer.set_bits(b)
    return model


def _global_tensors(arrays: ArrayRecord) -> list:
    return unpack_tensors(arrays[keys.APT_PAYLOAD].numpy().tobytes())
