"""Reply validation for APTFedAvg: a train reply is checked whole before it is aggregated.

Flower keeps its own reply checks beside its strategies (``strategy_utils``); these are the
checks of the aptfleet protocol on top: record layout, metric types, the device class, the
policy version, the measured uplink, the packed model and its precision history. Every
check raises :class:`~apt_core.errors.ReplyError` with a sentence naming the offending
key and value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from torch import Tensor, nn

from apt_core import federated as fed
from apt_core.config import PolicyError, PrecisionPolicy
from apt_core.federated import record_keys as keys
from apt_core.federated.device_class import (
    DEFAULT_DEVICE_CLASS,
    DEVICE_CLASS_PATTERN,
    DEVICE_CLASS_RULE,
)
from apt_core.packing import PackedTensor
from client.array_records import numpy_arrays
from server.flower.records import ClientReport, LayerReport

SCALARS = (
    keys.NUM_EXAMPLES,
    keys.TRAIN_LOSS,
    keys.ENERGY_J,
    keys.PARAM_BYTES,
    keys.PEAK_MEMORY_BYTES,
    keys.UPLINK_BYTES,
    keys.POLICY_VERSION,
)
HISTORY = (
    keys.HISTORY_STEP,
    keys.HISTORY_LAYER,
    keys.HISTORY_BITS,
    keys.HISTORY_GAVG,
    keys.HISTORY_UNDERFLOW,
)
LISTS = (keys.LAYER_BITS, keys.LAYER_EXPONENTS) + HISTORY


@dataclass(frozen=True)
class RoundTerms:
    """What the server sent in a round, which every reply of it must match.

    Parameters
    ----------
    template : nn.Module
        A model of the run's task, architecture and method (its shapes and layers).
    method : str
        "apt", "fp32", "qat8" or "fp32-q8".
    layer_names : list[str]
        The model's APT layers in ``apt_layers`` order (the order of per-layer lists).
    version : int
        Policy version of the round.
    policy : PrecisionPolicy
        The fleet policy of the round.
    overrides : dict[str, dict[str, Any]]
        Per-device-class policy overrides of the round.
    received : dict[str, Tensor] | None (default: None)
        fp32-q8: the dequantized global model devices received, which their 8-bit
        updates are added to.
    """

    template: nn.Module
    method: str
    layer_names: list[str]
    version: int
    policy: PrecisionPolicy
    overrides: dict[str, dict[str, Any]]
    received: dict[str, Tensor] | None = None

    def bits_cap(self, device_class: str) -> int | None:
        """The highest weight width devices of ``device_class`` were sent (None: float method)."""
        if self.method != "apt":
            return None
        try:
            return fed.effective_policy(self.policy, self.overrides, device_class).bits_max
        except PolicyError:
            return None


def failure_reason(msg: Message) -> str:
    """Why an error reply failed.

    The SuperLink's verdict on an unreachable node, or the device's own error.
    """
    reason = _error_reason(str(msg.error.reason))
    if msg.error.code == ErrorCode.NODE_UNAVAILABLE:
        return f"The device went offline (no heartbeat): {reason}"
    if msg.error.code in (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE):
        return f"The device's reply was lost: {reason}"
    return f"The device returned an error: {reason}"


def _error_reason(reason: str, limit: int = 500) -> str:
    """The device's own message out of a (possibly Ray-wrapped) ClientApp error."""
    marker = "Message: "
    if marker in reason:
        reason = reason.rsplit(marker, 1)[1].rstrip("'>\n ")
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def check_reply(msg: Message, client: ClientReport, terms: RoundTerms) -> fed.ReplyModel:
    """Validate a train reply and fill ``client`` with what it reports.

    Parameters
    ----------
    msg : Message
        A reply without error.
    client : ClientReport
        The device's row of the round record; filled as far as the reply could be read,
        also when it is then rejected.
    terms : RoundTerms
        What this round sent.

    Returns
    -------
    ReplyModel
        The decoded model: packed tensors for apt, a float state otherwise.

    Raises
    ------
    ReplyError
        If any part of the reply breaks the protocol.
    """
    content = msg.content
    _check_layout(content)
    metrics = content.metric_records[keys.METRICS]
    _check_metric_types(metrics)
    device_class = _read_device(content.config_records.get(keys.DEVICE, ConfigRecord()), client)
    _read_metrics(metrics, client)
    arrays = numpy_arrays(content.array_records[keys.ARRAYS])
    client.uplink_bytes = fed.arrays_nbytes(arrays)  # measured, never the claim
    _check_claims(metrics, client, terms.version)
    eff = fed.effective_policy(terms.policy, terms.overrides, device_class)
    model = fed.validate_arrays(terms.template, arrays, terms.method, eff, terms.received)
    if isinstance(model, list):
        client.layers = layer_precision(metrics, model, terms.layer_names, eff)
    return model


def _check_layout(content: RecordDict) -> None:
    """Exactly one ArrayRecord and one MetricRecord, under the protocol's keys."""
    if len(content.array_records) != 1 or keys.ARRAYS not in content.array_records:
        raise fed.ReplyError(
            f"The reply must hold exactly one ArrayRecord '{keys.ARRAYS}'; "
            f"it holds {sorted(content.array_records)}."
        )
    if len(content.metric_records) != 1 or keys.METRICS not in content.metric_records:
        raise fed.ReplyError(
            f"The reply must hold exactly one MetricRecord "
            f"'{keys.METRICS}'; it holds {sorted(content.metric_records)}."
        )


def _check_metric_types(m: MetricRecord) -> None:
    """Only the protocol's metric keys; scalars finite and >= 0, lists where lists go."""
    unexpected = sorted(set(m) - set(SCALARS + LISTS))
    if unexpected:
        # FedAvg's consistency check needs identical keys in every aggregated reply
        raise fed.ReplyError(f"The MetricRecord holds unexpected keys {unexpected}.")
    for k in SCALARS:
        v = m.get(k)
        if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise fed.ReplyError(f"Metric '{k}' = {v!r} must be a finite number >= 0.")
    for k in LISTS:
        if not isinstance(m.get(k), list):
            raise fed.ReplyError(f"Metric '{k}' must be a list; got {m.get(k)!r}.")


def _read_device(device: ConfigRecord, client: ClientReport) -> str:
    """The reported device class (validated) and partition id, into ``client``."""
    device_class = str(device.get(keys.DEVICE_CLASS, DEFAULT_DEVICE_CLASS))
    if not DEVICE_CLASS_PATTERN.match(device_class):
        raise fed.ReplyError(f"Device class {device_class!r} must be {DEVICE_CLASS_RULE}.")
    client.device_class = device_class
    pid = device.get(keys.PARTITION_ID)
    client.partition_id = int(pid) if isinstance(pid, int) else None
    return device_class


def _read_metrics(m: MetricRecord, client: ClientReport) -> None:
    """The scalar metrics (already type-checked) into ``client``."""
    client.policy_version = int(m[keys.POLICY_VERSION])  # type: ignore[arg-type]
    client.num_examples = int(m[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
    client.train_loss = float(m[keys.TRAIN_LOSS])  # type: ignore[arg-type]
    client.energy_j = float(m[keys.ENERGY_J])  # type: ignore[arg-type]
    client.param_bytes = int(m[keys.PARAM_BYTES])  # type: ignore[arg-type]
    client.peak_memory_bytes = int(m[keys.PEAK_MEMORY_BYTES])  # type: ignore[arg-type]


def _check_claims(m: MetricRecord, client: ClientReport, version: int) -> None:
    """Data to weight by, the round's policy version, and the uplink the server measured."""
    if client.num_examples < 1:
        raise fed.ReplyError("Metric 'num-examples' = 0: a device without data cannot be weighted.")
    if client.policy_version != version:
        raise fed.ReplyError(
            f"The device trained with policy version "
            f"{client.policy_version}; this round sent version {version}."
        )
    if int(m[keys.UPLINK_BYTES]) != client.uplink_bytes:  # type: ignore[arg-type]
        raise fed.ReplyError(
            f"Metric 'uplink-bytes' = {m[keys.UPLINK_BYTES]} does not match "
            f"the {client.uplink_bytes} bytes received."
        )


def layer_precision(
    m: MetricRecord, tensors: list[PackedTensor], names: list[str], eff: PrecisionPolicy
) -> list[LayerReport]:
    """Per-layer precision of an apt reply, checked against its packed model.

    Parameters
    ----------
    m : MetricRecord
        The reply's metrics (``layer-bits`` and the precision history lists).
    tensors : list[PackedTensor]
        The reply's validated packed model.
    names : list[str]
        Layer names in ``apt_layers`` order.
    eff : PrecisionPolicy
        The device's effective policy (the range its history must stay in).

    Returns
    -------
    list[LayerReport]
        One row per layer: bits and exponent of the packed model, mean Gavg and underflow
        over the round's controller checks.
    """
    bits = fed.global_bits(tensors)
    claimed = [int(b) for b in m[keys.LAYER_BITS]]  # type: ignore[union-attr]
    if claimed != [bits[n] for n in names]:
        raise fed.ReplyError(
            f"Metric 'layer-bits' = {claimed} does not match the bits of "
            f"the packed model {[bits[n] for n in names]}."
        )
    per_layer = _history_by_layer(m, names, eff)
    exps = {t.name.rpartition(".")[0]: t.exponent for t in tensors if t.name.endswith(".weight")}
    out = []
    for i, name in enumerate(names):
        seen = per_layer.get(i, [])
        n = len(seen)
        out.append(
            LayerReport(
                layer=name,
                bits=bits[name],
                exponent=exps[name],
                gavg=sum(g for g, _ in seen) / n if n else 0.0,
                underflow=sum(u for _, u in seen) / n if n else 0.0,
                checks=n,
            )
        )
    return out


def _history_by_layer(
    m: MetricRecord, names: list[str], eff: PrecisionPolicy
) -> dict[int, list[tuple[float, float]]]:
    """The precision history's finite (Gavg, underflow) pairs per layer index, checked."""
    hist = [list(m[k]) for k in HISTORY]  # type: ignore[arg-type]
    if len({len(h) for h in hist}) != 1:
        raise fed.ReplyError(
            f"The precision history lists have different lengths {[len(h) for h in hist]}."
        )
    per_layer: dict[int, list[tuple[float, float]]] = {}
    for step, layer, b, gavg, under in zip(*hist, strict=True):
        if not 0 <= int(layer) < len(names):
            raise fed.ReplyError(
                f"Precision history names layer index {layer}; the model has {len(names)} layers."
            )
        if not eff.bits_min <= int(b) <= eff.bits_max or int(step) < 0:
            raise fed.ReplyError(
                f"Precision history entry (step {step}, layer "
                f"'{names[int(layer)]}') has bits={b}, outside the device "
                f"policy's range [{eff.bits_min}, {eff.bits_max}]."
            )
        if math.isfinite(gavg) and math.isfinite(under):
            per_layer.setdefault(int(layer), []).append((float(gavg), float(under)))
    return per_layer
