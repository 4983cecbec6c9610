"""Seeded device sampling: one seed trains the same devices in every run of a configuration.

Flower's FedAvg samples node ids with Python's unseeded ``random`` module, and the
simulation engine gives its nodes random ids, so two runs of one configuration (or two
methods compared under one seed) train different devices in a round, and a comparison of
methods measures the draw as much as the method. :class:`PartitionSampler` asks
every node once which partition (device) it is, with a ``query.identify`` message the
ClientApp answers from its node config, orders the nodes by partition id, and draws each
round's sample from that order with a generator seeded by (run seed, round). A run with the
same seed and fleet therefore samples the same partitions round by round, whatever node ids
the engine handed out.

Nodes that do not say (an error reply, no reply within the timeout, or a ClientApp
without the query) are asked once, then sampled too, ordered after the identified ones by
node id; a node that joins later is asked when it first appears. The query costs one
message per device once per run (``docs/results/scale.md`` measures it on a 1,000-device
fleet); ``ServerSettings.sampling = "random"`` (run config ``sampling``) skips it and
samples as Flower does.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from typing import Protocol

from flwr.app import Message, RecordDict

from apt_core.federated import record_keys as keys

log = logging.getLogger(__name__)

#: how a run sampled devices, as results.json records it (a comparison reuses a saved run
#: only if it was sampled the same way)
RECORDED_SAMPLING = {"seeded": "seeded-by-partition", "random": "flower-random"}
SAMPLING = RECORDED_SAMPLING["seeded"]

#: nodes asked at once, to bound the messages in flight (Flower's simulation engine checks
#: every node against every message in flight)
IDENTIFY_BATCH = 100

#: message type of the identification query (ClientApp: ``@app.query("identify")``)
IDENTIFY = "query.identify"


class QueryGrid(Protocol):
    """The part of Flower's Grid the sampler uses."""

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send ``messages`` and wait up to ``timeout`` seconds for their replies."""
        ...


class PartitionSampler:
    """Samples nodes by partition id with a generator seeded by the run seed and round.

    Parameters
    ----------
    seed : int
        The run seed (``RunSettings.seed``).
    timeout : float
        Seconds the identification of new nodes may take in all (its batches share it);
        nodes not asked or not answered by then count as silent.
    """

    def __init__(self, seed: int, timeout: float) -> None:
        self.seed = int(seed)
        self.timeout = float(timeout)
        #: node id -> partition id it reported (None: asked, did not say)
        self.partitions: dict[int, int | None] = {}

    def identify(self, grid: QueryGrid, node_ids: Iterable[int]) -> None:
        """Ask the nodes not asked before which partition they are."""
        new = sorted(n for n in node_ids if n not in self.partitions)
        if not new:
            return
        for n in new:
            self.partitions[n] = None
        start = time.monotonic()
        for i in range(0, len(new), IDENTIFY_BATCH):
            left = start + self.timeout - time.monotonic()
            if left <= 0:
                break
            batch = new[i : i + IDENTIFY_BATCH]
            messages = [Message(RecordDict(), dst_node_id=n, message_type=IDENTIFY) for n in batch]
            for reply in grid.send_and_receive(messages, timeout=left):
                self._read_identity(reply)
        silent = sum(self.partitions[n] is None for n in new)
        log.info(
            "Sampling: %s of %s new nodes identified their partition in %.1f s%s.",
            len(new) - silent,
            len(new),
            time.monotonic() - start,
            f" ({silent} ordered by node id)" if silent else "",
        )

    def _read_identity(self, reply: Message) -> None:
        node = int(reply.metadata.src_node_id)
        if reply.has_error() or node not in self.partitions:
            return
        device = reply.content.config_records.get(keys.DEVICE)
        pid = None if device is None else device.get(keys.PARTITION_ID)
        if isinstance(pid, int) and not isinstance(pid, bool):
            self.partitions[node] = pid

    def order(self, node_ids: Iterable[int]) -> list[int]:
        """Identified nodes by (partition, node id), then the others by node id."""
        nodes = set(node_ids)
        known = sorted((p, n) for n in nodes if (p := self.partitions.get(n)) is not None)
        unknown = sorted(n for n in nodes if self.partitions.get(n) is None)
        return [n for _, n in known] + unknown

    def sample(self, server_round: int, node_ids: Iterable[int], size: int) -> list[int]:
        """``size`` of ``node_ids``, the same ones for the same seed, round and fleet."""
        ordered = self.order(node_ids)
        rng = random.Random(f"aptfleet-sampling:{self.seed}:{int(server_round)}")
        return rng.sample(ordered, min(int(size), len(ordered)))
