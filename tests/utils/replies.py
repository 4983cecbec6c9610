"""Factories for the Flower messages a strategy receives: train replies and errors."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

from apt_core import federated as fed
from apt_core.conversion import apt_layers
from apt_core.federated import record_keys as keys


class FakeGrid:
    """Just enough of a Grid for ``configure_train``: a fixed set of connected nodes.

    Nodes answer the sampler's identification query with their partition id
    (``partitions``; by default a node's index in ``node_ids``); a node mapped to None
    answers with an error, one left out of ``partitions`` does not answer.
    """

    def __init__(self, node_ids: list[int], partitions: Mapping[int, int | None] | None = None):
        self.node_ids = node_ids
        self.partitions = dict(
            partitions if partitions is not None else {n: i for i, n in enumerate(node_ids)}
        )
        self.queries: list[list[int]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        sent = list(messages)
        self.queries.append([m.metadata.dst_node_id for m in sent])
        replies = []
        for m in sent:
            node = m.metadata.dst_node_id
            if node not in self.partitions:
                continue
            pid = self.partitions[node]
            if pid is None:
                replies.append(create_error_reply(node, "no partition"))
            else:
                record = ConfigRecord({keys.PARTITION_ID: pid, keys.DEVICE_CLASS: "x"})
                content = RecordDict({keys.DEVICE: record})
                instruction = create_instruction(node, message_type=m.metadata.message_type)
                replies.append(Message(content, reply_to=instruction))
        return replies


def create_instruction(
    node_id: int, content: RecordDict | None = None, message_type: str = MessageType.TRAIN
) -> Message:
    """A message from the ServerApp to ``node_id``.

    Its metadata is set directly, so no Flower runtime is needed.
    """
    metadata = Metadata(
        run_id=1,
        message_id=f"m-{node_id}",
        src_node_id=0,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(content=content or RecordDict(), metadata=metadata)


@contextmanager
def task_identity(run_id: int = 1) -> Iterator[None]:
    """Let strategy code build instruction Messages outside a Flower runtime."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 0
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def create_mock_reply(
    arrays: Mapping[str, np.ndarray],
    num_examples: int,
    *,
    node_id: int = 1,
    metrics: Mapping[str, Any] | None = None,
    device_class: str = "standard",
    partition_id: int = 0,
) -> Message:
    """A train reply from ``node_id`` carrying ``arrays`` and consistent default metrics.

    ``metrics`` entries replace the defaults (e.g. ``{"policy-version": 2}``).
    """
    m: dict[str, Any] = {
        keys.NUM_EXAMPLES: num_examples,
        keys.TRAIN_LOSS: 1.0,
        keys.ENERGY_J: 0.5,
        keys.PARAM_BYTES: 1000,
        keys.PEAK_MEMORY_BYTES: 5000,
        keys.UPLINK_BYTES: fed.arrays_nbytes(arrays),
        keys.POLICY_VERSION: 1,
        keys.LAYER_BITS: [],
        keys.LAYER_EXPONENTS: [],
        keys.HISTORY_STEP: [],
        keys.HISTORY_LAYER: [],
        keys.HISTORY_BITS: [],
        keys.HISTORY_GAVG: [],
        keys.HISTORY_UNDERFLOW: [],
    }
    m.update(metrics or {})
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
            keys.METRICS: MetricRecord(m),
            keys.DEVICE: ConfigRecord(
                {keys.DEVICE_CLASS: device_class, keys.PARTITION_ID: partition_id}
            ),
        }
    )
    return Message(content, reply_to=create_instruction(node_id))


def create_apt_reply(
    model: nn.Module,
    num_examples: int,
    *,
    node_id: int = 1,
    history: list[tuple[int, int, int, float, float]] | None = None,
    **kwargs: Any,
) -> Message:
    """A well-formed apt reply for an APT ``model`` (bits and exponents read from it).

    ``history`` entries are (step, layer index, bits, gavg, underflow).
    """
    layers = apt_layers(model)
    hist = list(zip(*history, strict=True)) if history else [[], [], [], [], []]
    metrics = {
        keys.LAYER_BITS: [m.n_bits for m in layers.values()],
        keys.LAYER_EXPONENTS: [m.exponent() for m in layers.values()],
        keys.HISTORY_STEP: list(hist[0]),
        keys.HISTORY_LAYER: list(hist[1]),
        keys.HISTORY_BITS: list(hist[2]),
        keys.HISTORY_GAVG: list(hist[3]),
        keys.HISTORY_UNDERFLOW: list(hist[4]),
        **kwargs.pop("metrics", {}),
    }
    return create_mock_reply(
        fed.model_arrays(model, "apt"), num_examples, node_id=node_id, metrics=metrics, **kwargs
    )


def create_error_reply(node_id: int, reason: str) -> Message:
    """An error reply, as Flower delivers a ClientApp exception."""
    return Message(Error(code=0, reason=reason), reply_to=create_instruction(node_id))
