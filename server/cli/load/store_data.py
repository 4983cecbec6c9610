"""A synthetic store at fleet scale: one run of N devices x R rounds, written round by round.

Every round goes through ``crud.record_round`` and one commit, exactly as a training run's
recorder stores it, so generating the store also measures what writing one round costs.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.core.db import begin_write
from server.coordinator.schemas import RunCreate
from server.flower.records import ClientReport, LayerReport, RoundReport

log = logging.getLogger(__name__)

#: The digits CNN's layers (bits are recorded per layer and device).
LAYERS = ("conv1", "conv2", "fc1", "fc2")
#: Share of devices that fail, and that are rejected, in each round.
FAILURE_SHARE = 0.01
REJECTION_SHARE = 0.01
#: Size of the packed global model stored as each round's checkpoint (digits CNN at ~8 bits).
CHECKPOINT_BYTES = 24_000


@dataclass(frozen=True)
class StoreShape:
    """How big the synthetic store is."""

    devices: int = 1000
    rounds: int = 250
    seed: int = 0

    @property
    def precision_rows(self) -> int:
        """Per-layer rows (every device reports every layer, failures aside)."""
        return self.devices * self.rounds * len(LAYERS)


def _client(rng: random.Random, node_id: int, partition: int, round_: int) -> ClientReport:
    draw = rng.random()
    if draw < FAILURE_SHARE:
        return ClientReport(node_id=node_id, partition_id=partition, failure="Synthetic failure.")
    layers = [
        LayerReport(
            layer=name,
            bits=rng.randint(4, 12),
            exponent=-rng.randint(4, 10),
            gavg=rng.uniform(0.01, 2.0),
            underflow=rng.uniform(0.0, 0.3),
            checks=4,
        )
        for name in LAYERS
    ]
    return ClientReport(
        node_id=node_id,
        device_class=("mcu", "phone", "gateway")[node_id % 3],
        partition_id=partition,
        policy_version=1,
        energy_j=rng.uniform(0.5, 2.0),
        uplink_bytes=rng.randint(8_000, 30_000),
        downlink_bytes=30_000,
        num_examples=rng.randint(1, 40),
        train_loss=rng.uniform(0.1, 2.5),
        param_bytes=rng.randint(8_000, 30_000),
        peak_memory_bytes=rng.randint(100_000, 900_000),
        rejected="Synthetic rejection." if draw < FAILURE_SHARE + REJECTION_SHARE else None,
        layers=layers,
    )


def synthetic_round(shape: StoreShape, round_: int) -> RoundReport:
    """Round ``round_`` of the synthetic run: every device replies (a few fail or are rejected)."""
    rng = random.Random(shape.seed * 1_000_003 + round_)
    clients = [_client(rng, 10_000 + i, i, round_) for i in range(shape.devices)]
    trained = [c for c in clients if c.failure is None and c.rejected is None]
    bits = [layer.bits for c in trained for layer in c.layers]
    return RoundReport(
        round=round_,
        accuracy=min(0.97, 0.3 + 0.7 * (1 - 0.98**round_)),
        loss=1.0 / round_,
        energy_j=sum(c.energy_j for c in trained),
        uplink_bytes=sum(c.uplink_bytes for c in trained),
        downlink_bytes=sum(c.downlink_bytes for c in clients),
        participants=len(trained),
        failures=sum(1 for c in clients if c.failure is not None),
        rejections=sum(1 for c in clients if c.rejected is not None),
        mean_bits=sum(bits) / len(bits) if bits else None,
        policy_version=1,
        clients=clients,
        global_bits={name: 8 for name in LAYERS},
        packed_model=rng.randbytes(CHECKPOINT_BYTES),
    )


def create_store_run(session_factory: sessionmaker[Session], shape: StoreShape) -> int:
    """A running run of ``shape.devices`` devices planned for ``shape.rounds`` rounds."""
    run_in = RunCreate(
        task="digits", method="apt", clients=shape.devices, fraction=1.0, rounds=shape.rounds
    )
    with session_factory() as session:
        run = crud.create_run(
            session=session, **run_in.model_dump(), settings=run_in.run_settings().to_dict()
        )
        for status in ("pending", "running"):
            crud.set_run_status(session=session, run_id=run.id, status=status)
        session.commit()
        return run.id


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pid(session: Session) -> int | None:
    """The PostgreSQL server process of the session's connection (None on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


@dataclass(frozen=True)
class WriteTimes:
    """Seconds per round: wall clock, and CPU of this process and of the database server.

    CPU times hardly move when other jobs share the machine; SQLite's work is all in this
    process (``server_cpu`` is 0), PostgreSQL's server work is in ``server_cpu``.
    """

    wall: list[float]
    cpu: list[float]
    server_cpu: list[float]


def write_rounds(
    session_factory: sessionmaker[Session],
    run_id: int,
    shape: StoreShape,
    on_round: Callable[[int, float], None] | None = None,
) -> WriteTimes:
    """Record every round of the synthetic run, as the run's recorder does.

    Only ``record_round`` and the commit are timed, not building the round's report.
    """
    times = WriteTimes([], [], [])
    for round_ in range(1, shape.rounds + 1):
        record = synthetic_round(shape, round_)
        with session_factory() as session:
            begin_write(session)
            backend = _backend_pid(session)
            server_start = cpu_seconds(backend) if backend else 0.0
            start, start_cpu = time.perf_counter(), time.process_time()
            crud.record_round(session=session, run_id=run_id, record=record)
            session.commit()
            times.wall.append(time.perf_counter() - start)
            times.cpu.append(time.process_time() - start_cpu)
            times.server_cpu.append(cpu_seconds(backend) - server_start if backend else 0.0)
        if on_round is not None:
            on_round(round_, times.wall[-1])
    return times
