"""APTFedAvg: FedAvg over bit-packed APT models, with per-round policy and round records."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency
from torch import nn

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.federated import record_keys as keys
from apt_core.federated.device_class import (
    DEFAULT_DEVICE_CLASS,
    DEVICE_CLASS_PATTERN,
    DEVICE_CLASS_RULE,
)
from apt_core.layers import apt_layers
from apt_core.packing import unpack_tensors
from apt_core.wire import unpack
from server.flower.records import ClientRound, LayerPrecision, RoundRecord

log = logging.getLogger(__name__)

PolicyProvider = Callable[[], tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]]]
Recorder = Callable[[RoundRecord], None]
Evaluator = Callable[[nn.Module], tuple[float, float]]

_SCALARS = (keys.NUM_EXAMPLES, keys.TRAIN_LOSS, keys.ENERGY_J, keys.PARAM_BYTES,
            keys.PEAK_MEMORY_BYTES, keys.UPLINK_BYTES, keys.POLICY_VERSION)
_HISTORY = (keys.HISTORY_STEP, keys.HISTORY_LAYER, keys.HISTORY_BITS, keys.HISTORY_GAVG,
            keys.HISTORY_UNDERFLOW)
_LISTS = (keys.LAYER_BITS, keys.LAYER_EXPONENTS) + _HISTORY
_FLOAT_METHOD_BITS = 32.0


def aggregate_scalar_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of the scalar metrics (lists differ per device; left out)."""
    metrics = [r.metric_records[keys.METRICS] for r in records]
    total = sum(float(cast(float, m[weight_key])) for m in metrics)
    out = MetricRecord()
    for m in metrics:
        w = float(cast(float, m[weight_key])) / total
        for k, v in m.items():
            if k != weight_key and not isinstance(v, list):
                out[k] = float(out.get(k, 0.0)) + float(v) * w  # type: ignore[arg-type]
    return out


def _error_reason(reason: str, limit: int = 500) -> str:
    """The device's own message out of a (possibly Ray-wrapped) ClientApp error."""
    marker = "Message: "
    if marker in reason:
        reason = reason.rsplit(marker, 1)[1].rstrip("'>\n ")
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _failure_reason(msg: Message) -> str:
    """Why an error reply failed: the SuperLink's verdict on an unreachable node, or the
    device's own error."""
    reason = _error_reason(str(msg.error.reason))
    if msg.error.code == ErrorCode.NODE_UNAVAILABLE:
        return f"The device went offline (no heartbeat): {reason}"
    if msg.error.code in (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE):
        return f"The device's reply was lost: {reason}"
    return f"The device returned an error: {reason}"


def _arrays(record: ArrayRecord) -> dict:
    return {k: v.numpy() for k, v in record.items()}


def _array_record(arrays: dict) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


class APTFedAvg(FedAvg):
    """FedAvg for APT devices: bit-packed models both ways, validated replies, round records.

    Parameters
    ----------
    settings : RunSettings
        Task, architecture, method ("apt", "fp32", "qat8") and local training settings,
        sent to every device each round.
    policy_provider : Callable[[], tuple[int, PrecisionPolicy, dict[str, dict]]]
        Asked at every ``configure_train``: (policy version, fleet policy, per-device-class
        overrides). Its answer goes into that round's config.
    recorder : Callable[[RoundRecord], None] | None (default: None)
        Receives each round's :class:`RoundRecord` once the round is aggregated and
        centrally evaluated. Its exceptions propagate (a round that cannot be recorded
        fails the run).
    evaluator : Callable[[nn.Module], tuple[float, float]] | None (default: None)
        Central evaluation of the global model: (accuracy, loss). Used by
        :meth:`evaluate_global` (pass it to ``start(evaluate_fn=...)``) and for the record.
    **kwargs
        FedAvg's sampling arguments (``fraction_train``, ``min_available_nodes``, ...).
    """

    def __init__(self, *, settings: fed.RunSettings, policy_provider: PolicyProvider,
                 recorder: Recorder | None = None, evaluator: Evaluator | None = None,
                 lr_rounds: int | None = None, round_offset: int = 0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("train_metrics_aggr_fn", aggregate_scalar_metrics)
        kwargs.setdefault("fraction_evaluate", 0.0)
        super().__init__(arrayrecord_key=keys.ARRAYS, configrecord_key=keys.CONFIG,
                         weighted_by_key=keys.NUM_EXAMPLES, **kwargs)
        self.settings = settings
        self.lr_rounds = lr_rounds
        self.round_offset = round_offset
        self.policy_provider = policy_provider
        self.recorder = recorder
        self.evaluator = evaluator
        self.template = fed.make_model(settings.task, settings.arch, settings.method)
        self._layer_names = list(apt_layers(self.template))
        self._policy: tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]] | None = None
        self._round_policy: dict[int, tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]]] = {}
        self._sent: dict[int, dict[int, int]] = {}
        self._sent_messages: dict[int, list[Message]] = {}
        #: device class each node last reported in an accepted reply; a failure carries no
        #: content, and recording it as "standard" would rewrite the device's class
        self._device_classes: dict[int, str] = {}
        self._global: ArrayRecord | None = None
        self._evaluated: dict[int, tuple[float, float]] = {}

    # --- setup ----------------------------------------------------------------------
    def initial_arrays(self) -> ArrayRecord:
        """The round-0 global model (seeded init; apt layers at the policy's start bits)."""
        _, policy, _ = self._current_policy()
        s = self.settings
        model = fed.make_model(s.task, s.arch, s.method, policy, seed=s.seed)
        self._global = _array_record(fed.model_arrays(model, s.method))
        return self._global

    def arrays_from_checkpoint(self, checkpoint: bytes) -> ArrayRecord:
        """The global model stored by :meth:`aggregate_train` (packed codes for apt, a
        ``torch.save`` float state_dict otherwise), as the arrays to continue from."""
        s = self.settings
        model = fed.make_model(s.task, s.arch, s.method)
        if s.method == "apt":
            unpack(model, checkpoint)
        else:
            model.load_state_dict(torch.load(io.BytesIO(checkpoint), weights_only=True))
        self._global = _array_record(fed.model_arrays(model, s.method))
        return self._global

    def summary(self) -> None:
        """Log the run settings, then FedAvg's sampling summary."""
        s = self.settings
        log.info("APTFedAvg: task=%s arch=%s method=%s local_epochs=%s lr=%s batch_size=%s "
                 "momentum=%s alpha=%s seed=%s", s.task, s.arch, s.method, s.local_epochs,
                 s.lr, s.batch_size, s.momentum, s.alpha, s.seed)
        log.info("APTFedAvg: recorder=%s central evaluation=%s", self.recorder is not None,
                 self.evaluator is not None)
        super().summary()

    def _current_policy(self) -> tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]]:
        try:
            version, policy, overrides = self.policy_provider()
            fed.policy_to_config(version, policy, overrides)  # rejects unknown fields
            for device_class in overrides:  # rejects overrides that make invalid policies
                fed.effective_policy(policy, overrides, device_class)
            self._policy = (int(version), policy, dict(overrides))
        except Exception as exc:  # a provider backed by a DB may fail in many ways
            if self._policy is None:
                raise
            log.warning("Policy provider failed (%s: %s); keeping policy version %s.",
                        type(exc).__name__, exc, self._policy[0])
        assert self._policy is not None
        return self._policy

    # --- configure --------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Ask the provider for the policy, put it and the run settings into the config."""
        version, policy, overrides = self._current_policy()
        self._round_policy[server_round] = (version, policy, overrides)
        self._global = arrays
        cfg = ConfigRecord({k: v for k, v in config.items()
                            if not k.startswith((keys.POLICY_PREFIX, keys.OVERRIDE_PREFIX))})
        cfg.update(self.settings.to_config())
        cfg[keys.LR] = self.round_lr(server_round + self.round_offset)
        cfg.update(fed.policy_to_config(version, policy, overrides))
        messages = list(super().configure_train(server_round, arrays, cfg, grid))
        nbytes = fed.arrays_nbytes(_arrays(arrays))
        self._sent[server_round] = {m.metadata.dst_node_id: nbytes for m in messages}
        # the Grid sets each message's id when it pushes it; aggregate_train maps replies
        # that the SuperLink generated (e.g. "node unavailable") back to their node by it
        self._sent_messages[server_round] = messages
        log.info("Round %s: policy version %s sent to %s devices (%s bytes each).",
                 server_round, version, len(messages), nbytes)
        return messages

    def round_lr(self, server_round: int) -> float:
        """Local learning rate of a round: cosine decay over the run's rounds to 10% of
        the base rate (constant when the run length is unknown). Decaying across rounds
        lets FedAvg settle instead of oscillating with non-IID devices; APT devices see
        their updates shrink and add bits, as they do at learning-rate decays."""
        base = float(self.settings.lr)
        if not self.lr_rounds or self.lr_rounds <= 1:
            return base
        t = min(max(server_round - 1, 0) / (self.lr_rounds - 1), 1.0)
        return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Federated evaluation: the run settings go along so devices can load the model."""
        config.update(self.settings.to_config())
        return super().configure_evaluate(server_round, arrays, config, grid)

    # --- aggregate --------------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each reply, aggregate the good ones, evaluate, and record the round.

        Error replies are failures, replies that fail validation are rejected; both are
        logged with their reason and listed in the round record, and the round goes on
        with the rest. Sampled devices that did not reply count as failures too.
        """
        replies = list(replies)
        if server_round not in self._round_policy:
            self._round_policy[server_round] = self._current_policy()
        version, policy, overrides = self._round_policy[server_round]
        sent = self._sent.get(server_round, {})
        sent_to = {m.metadata.message_id: int(m.metadata.dst_node_id)
                   for m in self._sent_messages.pop(server_round, []) if m.metadata.message_id}
        default_down = fed.arrays_nbytes(_arrays(self._global)) if self._global else 0
        reference = self._global_max_abs()
        clients: list[ClientRound] = []
        accepted: list[tuple[Message, fed.ReplyModel, ClientRound]] = []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error() and node not in sent:
                # an error reply the SuperLink (or Grid) made for a sampled node, e.g. one
                # that stopped sending heartbeats: its source is the SuperLink, not the node
                node = sent_to.get(msg.metadata.reply_to_message_id, node)
            down = sent.get(node, default_down)
            if node in {c.node_id for c in clients}:
                log.warning("Round %s: node %s replied twice; the second reply is ignored.",
                            server_round, node)
                continue
            if msg.has_error():
                reason = _failure_reason(msg)
                log.warning("Round %s: node %s failed: %s", server_round, node, reason)
                clients.append(self._failed(node, down, reason))
                continue
            client = ClientRound(node_id=node, downlink_bytes=down)
            try:
                model = self._check_reply(msg, client, version, policy, overrides)
                fed.check_growth(reference, model)
            except fed.ReplyError as exc:
                client.rejected = str(exc)
                log.warning("Round %s: reply of node %s rejected: %s", server_round, node, exc)
                clients.append(client)
                continue
            clients.append(client)
            accepted.append((msg, model, client))
            self._device_classes[node] = client.device_class
        replied = {c.node_id for c in clients}
        for node, down in sent.items():
            if node not in replied:
                clients.append(self._failed(node, down, "The device sent no reply before the "
                                                        "round's timeout."))
        arrays, metrics, packed, gbits = None, None, None, {}
        if accepted:
            contents = [m.content for m, _, _ in accepted]
            validate_message_reply_consistency(contents, self.weighted_by_key, True)
            new = fed.aggregate(self.template, [(mod, c.num_examples) for _, mod, c in accepted])
            arrays, packed = self._encode_global(new)
            gbits = fed.global_bits(new) if isinstance(new, list) else {}
            metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
            self._global = arrays
        log.info("Round %s: %s aggregated, %s rejected, %s failed.", server_round,
                 len(accepted), sum(c.rejected is not None for c in clients),
                 sum(c.failure is not None for c in clients))
        self._record(server_round, version, clients, arrays, packed, gbits)
        return arrays, metrics

    def _failed(self, node: int, downlink_bytes: int, reason: str) -> ClientRound:
        """A failed device's row, under the class it reported before (if any)."""
        return ClientRound(node_id=node, downlink_bytes=downlink_bytes, failure=reason,
                           device_class=self._device_classes.get(node, DEFAULT_DEVICE_CLASS))

    def _global_max_abs(self) -> dict[str, float]:
        """Per-tensor max |w| of the global model this round started from."""
        if self._global is None:
            return {}
        arrays = _arrays(self._global)
        if self.settings.method == "apt":
            model: fed.ReplyModel = unpack_tensors(arrays[keys.APT_PAYLOAD].tobytes())
        else:
            model = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        return fed.tensors_max_abs(model)

    def _encode_global(self, new: fed.ReplyModel) -> tuple[ArrayRecord, bytes]:
        if isinstance(new, list):
            arrays = fed.packed_arrays(new)
            return _array_record(arrays), arrays[keys.APT_PAYLOAD].tobytes()
        buf = io.BytesIO()
        torch.save(new, buf)
        return _array_record({k: v.numpy() for k, v in new.items()}), buf.getvalue()

    def _check_reply(self, msg: Message, client: ClientRound, version: int,
                     policy: PrecisionPolicy, overrides: dict[str, dict[str, Any]]
                     ) -> fed.ReplyModel:
        content = msg.content
        if len(content.array_records) != 1 or keys.ARRAYS not in content.array_records:
            raise fed.ReplyError(f"The reply must hold exactly one ArrayRecord '{keys.ARRAYS}'; "
                                 f"it holds {sorted(content.array_records)}.")
        if len(content.metric_records) != 1 or keys.METRICS not in content.metric_records:
            raise fed.ReplyError(f"The reply must hold exactly one MetricRecord "
                                 f"'{keys.METRICS}'; it holds {sorted(content.metric_records)}.")
        m = content.metric_records[keys.METRICS]
        unexpected = sorted(set(m) - set(_SCALARS + _LISTS))
        if unexpected:
            # FedAvg's consistency check needs identical keys in every aggregated reply
            raise fed.ReplyError(f"The MetricRecord holds unexpected keys {unexpected}.")
        for k in _SCALARS:
            v = m.get(k)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise fed.ReplyError(f"Metric '{k}' = {v!r} must be a finite number >= 0.")
        for k in _LISTS:
            if not isinstance(m.get(k), list):
                raise fed.ReplyError(f"Metric '{k}' must be a list; got {m.get(k)!r}.")
        device = content.config_records.get(keys.DEVICE, ConfigRecord())
        device_class = str(device.get(keys.DEVICE_CLASS, DEFAULT_DEVICE_CLASS))
        if not DEVICE_CLASS_PATTERN.match(device_class):
            raise fed.ReplyError(f"Device class {device_class!r} must be {DEVICE_CLASS_RULE}.")
        client.device_class = device_class
        pid = device.get(keys.PARTITION_ID)
        client.partition_id = int(pid) if isinstance(pid, int) else None
        client.policy_version = int(m[keys.POLICY_VERSION])  # type: ignore[arg-type]
        client.num_examples = int(m[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
        client.train_loss = float(m[keys.TRAIN_LOSS])  # type: ignore[arg-type]
        client.energy_j = float(m[keys.ENERGY_J])  # type: ignore[arg-type]
        client.param_bytes = int(m[keys.PARAM_BYTES])  # type: ignore[arg-type]
        client.peak_memory_bytes = int(m[keys.PEAK_MEMORY_BYTES])  # type: ignore[arg-type]
        arrays = _arrays(content.array_records[keys.ARRAYS])
        client.uplink_bytes = fed.arrays_nbytes(arrays)  # measured, never the claim
        if client.num_examples < 1:
            raise fed.ReplyError("Metric 'num-examples' = 0: a device without data cannot "
                                 "be weighted.")
        if client.policy_version != version:
            raise fed.ReplyError(f"The device trained with policy version "
                                 f"{client.policy_version}; this round sent version {version}.")
        if int(m[keys.UPLINK_BYTES]) != client.uplink_bytes:  # type: ignore[arg-type]
            raise fed.ReplyError(f"Metric 'uplink-bytes' = {m[keys.UPLINK_BYTES]} does not match "
                                 f"the {client.uplink_bytes} bytes received.")
        eff = fed.effective_policy(policy, overrides, device_class)
        model = fed.validate_arrays(self.template, arrays, self.settings.method, eff)
        if isinstance(model, list):
            client.layers = self._layers(m, model, eff)
        return model

    def _layers(self, m: MetricRecord, tensors: list, eff: PrecisionPolicy
                ) -> list[LayerPrecision]:
        bits = fed.global_bits(tensors)
        exps = {t.name.rpartition(".")[0]: t.exponent for t in tensors
                if t.name.endswith(".weight")}
        names = self._layer_names
        claimed = [int(b) for b in m[keys.LAYER_BITS]]  # type: ignore[union-attr]
        if claimed != [bits[n] for n in names]:
            raise fed.ReplyError(f"Metric 'layer-bits' = {claimed} does not match the bits of "
                                 f"the packed model {[bits[n] for n in names]}.")
        hist = [list(m[k]) for k in _HISTORY]  # type: ignore[arg-type]
        if len({len(h) for h in hist}) != 1:
            raise fed.ReplyError("The precision history lists have different lengths "
                                 f"{[len(h) for h in hist]}.")
        per_layer: dict[int, list[tuple[float, float]]] = {}
        for step, layer, b, gavg, under in zip(*hist, strict=True):
            if not 0 <= int(layer) < len(names):
                raise fed.ReplyError(f"Precision history names layer index {layer}; the model "
                                     f"has {len(names)} layers.")
            if not eff.bits_min <= int(b) <= eff.bits_max or int(step) < 0:
                raise fed.ReplyError(f"Precision history entry (step {step}, layer "
                                     f"'{names[int(layer)]}') has bits={b}, outside the device "
                                     f"policy's range [{eff.bits_min}, {eff.bits_max}].")
            if math.isfinite(gavg) and math.isfinite(under):
                per_layer.setdefault(int(layer), []).append((float(gavg), float(under)))
        out = []
        for i, name in enumerate(names):
            seen = per_layer.get(i, [])
            n = len(seen)
            out.append(LayerPrecision(
                layer=name, bits=bits[name], exponent=exps[name],
                gavg=sum(g for g, _ in seen) / n if n else 0.0,
                underflow=sum(u for _, u in seen) / n if n else 0.0, checks=n))
        return out

    # --- evaluation and records ---------------------------------------------------------
    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Central evaluation of a global model (the ``evaluate_fn`` of ``start``)."""
        if self.evaluator is None:
            return None
        if server_round not in self._evaluated or server_round == 0:
            model = fed.make_model(self.settings.task, self.settings.arch, self.settings.method)
            fed.load_arrays(model, _arrays(arrays), self.settings.method)
            self._evaluated[server_round] = self.evaluator(model)
        acc, loss = self._evaluated[server_round]
        return MetricRecord({keys.ACCURACY: float(acc), keys.LOSS: float(loss)})

    def _record(self, server_round: int, version: int, clients: list[ClientRound],
                arrays: ArrayRecord | None, packed: bytes | None,
                gbits: dict[str, int]) -> None:
        acc = loss = None
        current = arrays if arrays is not None else self._global
        if current is not None and self.evaluator is not None:
            self._evaluated.pop(server_round, None)
            res = self.evaluate_global(server_round, current)
            if res is not None:
                acc, loss = float(res[keys.ACCURACY]), float(res[keys.LOSS])  # type: ignore
        ok = [c for c in clients if c.rejected is None and c.failure is None]
        if self.settings.method == "apt":
            means = [fed.mean_bits(self.template, {x.layer: x.bits for x in c.layers})
                     for c in ok]
            mean = sum(x for x in means if x is not None) / len(means) if means else None
        else:
            mean = _FLOAT_METHOD_BITS
        record = RoundRecord(
            round=server_round, accuracy=acc,
            loss=loss if loss is None or math.isfinite(loss) else None,
            energy_j=sum(c.energy_j for c in clients),
            uplink_bytes=sum(c.uplink_bytes for c in clients),
            downlink_bytes=sum(c.downlink_bytes for c in clients),
            participants=len(ok), failures=sum(c.failure is not None for c in clients),
            rejections=sum(c.rejected is not None for c in clients), mean_bits=mean,
            policy_version=version, clients=clients, global_bits=gbits, packed_model=packed)
        if self.recorder is not None:
            self.recorder(record)
