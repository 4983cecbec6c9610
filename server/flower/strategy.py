"""APTFedAvg: FedAvg over bit-packed APT models, with per-round policy and round records."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import (
    sample_nodes,
    validate_message_reply_consistency,
)

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.conversion import apt_layers
from apt_core.federated import record_keys as keys
from apt_core.federated.device_class import DEFAULT_DEVICE_CLASS
from client.array_records import array_record, numpy_arrays
from server.flower.global_model import Evaluator, GlobalModel, Recorder
from server.flower.records import ClientReport
from server.flower.sampling import PartitionSampler
from server.flower.validation import RoundTerms, check_reply, failure_reason

log = logging.getLogger(__name__)

PolicyProvider = Callable[[], tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]]]

_Accepted = tuple[Message, fed.ReplyModel, ClientReport]


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


def _reply_node(msg: Message, sent: dict[int, int], sent_to: dict[str, int]) -> int:
    """The node a reply speaks for."""
    node = int(msg.metadata.src_node_id)
    if msg.has_error() and node not in sent:
        # an error reply the SuperLink (or Grid) made for a sampled node, e.g. one that
        # stopped sending heartbeats: its source is the SuperLink, not the node
        node = sent_to.get(msg.metadata.reply_to_message_id, node)
    return node


def _aggregation_key(client: ClientReport) -> tuple[bool, int, int]:
    """Partition id (devices that gave none last), then node id."""
    return client.partition_id is None, client.partition_id or 0, client.node_id


class APTFedAvg(GlobalModel, FedAvg):
    """FedAvg for APT devices: bit-packed models both ways, validated replies, round records.

    Parameters
    ----------
    settings : RunSettings
        Task, architecture, method ("apt", "fp32", "qat8") and local training settings,
        sent to every device each round.
    policy_provider : Callable[[], tuple[int, PrecisionPolicy, dict[str, dict]]]
        Asked at every ``configure_train``: (policy version, fleet policy, per-device-class
        overrides). Its answer goes into that round's config.
    recorder : Callable[[RoundReport], None] | None (default: None)
        Receives each round's :class:`RoundReport` once the round is aggregated and
        centrally evaluated. Its exceptions propagate (a round that cannot be recorded
        fails the run).
    evaluator : Callable[[nn.Module], tuple[float, float]] | None (default: None)
        Central evaluation of the global model: (accuracy, loss). Used by
        :meth:`evaluate_global` (pass it to ``start(evaluate_fn=...)``) and for the record.
    sampling : str (default: "seeded")
        "seeded": training samples are drawn by partition id, seeded by the run seed and
        round (:class:`server.flower.sampling.PartitionSampler`); "random": FedAvg's own.
    identify_timeout : float (default: 60.0)
        Seconds the seeded sampler's identification of new nodes may take.
    **kwargs
        FedAvg's sampling arguments (``fraction_train``, ``min_available_nodes``, ...).
    """

    def __init__(
        self,
        *,
        settings: fed.RunSettings,
        policy_provider: PolicyProvider,
        recorder: Recorder | None = None,
        evaluator: Evaluator | None = None,
        lr_rounds: int | None = None,
        round_offset: int = 0,
        sampling: str = "seeded",
        identify_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("train_metrics_aggr_fn", aggregate_scalar_metrics)
        kwargs.setdefault("fraction_evaluate", 0.0)
        super().__init__(
            arrayrecord_key=keys.ARRAYS,
            configrecord_key=keys.CONFIG,
            weighted_by_key=keys.NUM_EXAMPLES,
            **kwargs,
        )
        self.settings = settings
        self.lr_rounds = lr_rounds
        self.round_offset = round_offset
        self.policy_provider = policy_provider
        self.recorder = recorder
        self.evaluator = evaluator
        self.sampler = (
            PartitionSampler(settings.seed, identify_timeout) if sampling == "seeded" else None
        )
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
        if s.method == "fp32-q8":
            self._master = fed.float_state(model)
        self._global = array_record(fed.model_arrays(model, s.method))
        return self._global

    def summary(self) -> None:
        """Log the run settings, then FedAvg's sampling summary."""
        s = self.settings
        log.info(
            "APTFedAvg: task=%s arch=%s method=%s local_epochs=%s lr=%s batch_size=%s "
            "momentum=%s alpha=%s seed=%s",
            s.task,
            s.arch,
            s.method,
            s.local_epochs,
            s.lr,
            s.batch_size,
            s.momentum,
            s.alpha,
            s.seed,
        )
        log.info(
            "APTFedAvg: recorder=%s central evaluation=%s",
            self.recorder is not None,
            self.evaluator is not None,
        )
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
            log.warning(
                "Policy provider failed (%s: %s); keeping policy version %s.",
                type(exc).__name__,
                exc,
                self._policy[0],
            )
        assert self._policy is not None
        return self._policy

    # --- configure --------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the provider for the policy, put it and the run settings into the config."""
        version, policy, overrides = self._current_policy()
        self._round_policy[server_round] = (version, policy, overrides)
        self._global = arrays
        cfg = ConfigRecord(
            {
                k: v
                for k, v in config.items()
                if not k.startswith((keys.POLICY_PREFIX, keys.OVERRIDE_PREFIX))
            }
        )
        cfg.update(self.settings.to_config())
        cfg[keys.LR] = self.round_lr(server_round + self.round_offset)
        cfg.update(fed.policy_to_config(version, policy, overrides))
        cfg["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
        nodes = self._sample_train(server_round, grid)
        messages = list(self._construct_messages(record, nodes, MessageType.TRAIN))
        nbytes = fed.arrays_nbytes(numpy_arrays(arrays))
        self._sent[server_round] = {m.metadata.dst_node_id: nbytes for m in messages}
        # the Grid sets each message's id when it pushes it; aggregate_train maps replies
        # that the SuperLink generated (e.g. "node unavailable") back to their node by it
        self._sent_messages[server_round] = messages
        log.info(
            "Round %s: policy version %s sent to %s devices (%s bytes each).",
            server_round,
            version,
            len(messages),
            nbytes,
        )
        return messages

    def _sample_train(self, server_round: int, grid: Grid) -> list[int]:
        """FedAvg's sample size and wait for nodes; the seeded sampler's draw if there is one."""
        if self.fraction_train == 0.0:
            return []
        size = max(int(len(list(grid.get_node_ids())) * self.fraction_train), self.min_train_nodes)
        sampled, connected = sample_nodes(grid, self.min_available_nodes, size)
        if self.sampler is None:
            return sampled
        self.sampler.identify(grid, connected)
        nodes = self.sampler.sample(server_round + self.round_offset, connected, len(sampled))
        log.info("Round %s: sampled %s of %s nodes.", server_round, len(nodes), len(connected))
        return nodes

    def round_lr(self, server_round: int) -> float:
        """Local learning rate of a round: cosine decay over the run's rounds to 10% of base.

        Constant when the run length is unknown. Decaying across rounds lets FedAvg settle
        instead of oscillating with non-IID devices; APT devices see their updates shrink and
        add bits, as they do at learning-rate decays.
        """
        base = float(self.settings.lr)
        if not self.lr_rounds or self.lr_rounds <= 1:
            return base
        t = min(max(server_round - 1, 0) / (self.lr_rounds - 1), 1.0)
        return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation: the run settings go along so devices can load the model."""
        config.update(self.settings.to_config())
        return super().configure_evaluate(server_round, arrays, config, grid)

    # --- aggregate --------------------------------------------------------------------
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each reply, aggregate the good ones, evaluate, and record the round.

        Error replies are failures, replies that fail validation are rejected; both are
        logged with their reason and listed in the round record, and the round goes on
        with the rest. Sampled devices that did not reply count as failures too.
        """
        terms = self._round_terms(server_round)
        clients, accepted = self._judge_replies(server_round, list(replies), terms)
        clients += self._silent(server_round, clients)
        for c in clients:
            c.bits_cap = terms.bits_cap(c.device_class)
        arrays, metrics, packed, gbits = self._aggregate_accepted(accepted)
        log.info(
            "Round %s: %s aggregated, %s rejected, %s failed.",
            server_round,
            len(accepted),
            sum(c.rejected is not None for c in clients),
            sum(c.failure is not None for c in clients),
        )
        self._record(server_round, terms.version, clients, arrays, packed, gbits)
        return arrays, metrics

    def _round_terms(self, server_round: int) -> RoundTerms:
        """What the round sent (its policy is asked for now if configure_train did not run)."""
        if server_round not in self._round_policy:
            self._round_policy[server_round] = self._current_policy()
        version, policy, overrides = self._round_policy[server_round]
        return RoundTerms(
            template=self.template,
            method=self.settings.method,
            layer_names=self._layer_names,
            version=version,
            policy=policy,
            overrides=overrides,
            received=self._sent_state() if self.settings.method == "fp32-q8" else None,
        )

    def _judge_replies(
        self, server_round: int, replies: list[Message], terms: RoundTerms
    ) -> tuple[list[ClientReport], list[_Accepted]]:
        """One row per replying node, and the accepted replies with their decoded models.

        The first reply of a node counts.
        """
        sent = self._sent.get(server_round, {})
        sent_to = {
            m.metadata.message_id: int(m.metadata.dst_node_id)
            for m in self._sent_messages.pop(server_round, [])
            if m.metadata.message_id
        }
        default_down = fed.arrays_nbytes(numpy_arrays(self._global)) if self._global else 0
        reference = self._global_max_abs()
        clients: list[ClientReport] = []
        accepted: list[_Accepted] = []
        for msg in replies:
            node = _reply_node(msg, sent, sent_to)
            if node in {c.node_id for c in clients}:
                log.warning(
                    "Round %s: node %s replied twice; the second reply is ignored.",
                    server_round,
                    node,
                )
                continue
            client, model = self._judge_reply(
                server_round, msg, node, sent.get(node, default_down), terms, reference
            )
            clients.append(client)
            if model is not None:
                accepted.append((msg, model, client))
                self._device_classes[node] = client.device_class
        return clients, accepted

    def _judge_reply(
        self,
        server_round: int,
        msg: Message,
        node: int,
        downlink_bytes: int,
        terms: RoundTerms,
        reference: dict[str, float],
    ) -> tuple[ClientReport, fed.ReplyModel | None]:
        """The node's row, and its model when the reply is accepted (None otherwise)."""
        if msg.has_error():
            reason = failure_reason(msg)
            log.warning("Round %s: node %s failed: %s", server_round, node, reason)
            return self._failed(node, downlink_bytes, reason), None
        client = ClientReport(node_id=node, downlink_bytes=downlink_bytes)
        try:
            model = check_reply(msg, client, terms)
            fed.check_growth(reference, model)
        except fed.ReplyError as exc:
            client.rejected = str(exc)
            client.energy_j = 0.0  # a rejected reply's self-reported energy is not counted
            log.warning("Round %s: reply of node %s rejected: %s", server_round, node, exc)
            return client, None
        return client, model

    def _silent(self, server_round: int, clients: list[ClientReport]) -> list[ClientReport]:
        """Failure rows of the sampled nodes that sent nothing."""
        replied = {c.node_id for c in clients}
        return [
            self._failed(node, down, "The device sent no reply before the round's timeout.")
            for node, down in self._sent.get(server_round, {}).items()
            if node not in replied
        ]

    def _aggregate_accepted(
        self, accepted: list[_Accepted]
    ) -> tuple[ArrayRecord | None, MetricRecord | None, bytes | None, dict[str, int]]:
        """The new global model (arrays, stored bytes, per-layer bits) and the aggregated metrics.

        All None (bits empty) when no reply was accepted.
        """
        if not accepted:
            return None, None, None, {}
        # replies arrive in whatever order the devices finish; summing floats in that order
        # made two runs of one configuration differ, so sum them in partition order
        accepted = sorted(accepted, key=lambda a: _aggregation_key(a[2]))
        contents = [m.content for m, _, _ in accepted]
        validate_message_reply_consistency(contents, self.weighted_by_key, True)
        new = fed.aggregate(self.template, [(mod, c.num_examples) for _, mod, c in accepted])
        arrays, packed = self._encode_global(new)
        gbits = fed.global_bits(new) if isinstance(new, list) else {}
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        self._global = arrays
        return arrays, metrics, packed, gbits

    def _failed(self, node: int, downlink_bytes: int, reason: str) -> ClientReport:
        """A failed device's row, under the class it reported before (if any)."""
        return ClientReport(
            node_id=node,
            downlink_bytes=downlink_bytes,
            failure=reason,
            device_class=self._device_classes.get(node, DEFAULT_DEVICE_CLASS),
        )
