"""Factories for runs and their rounds."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.schemas import RunCreate
from server.coordinator.tables import Run
from server.flower.records import ClientReport, LayerReport, RoundReport


def create_random_run(db: Session, *, status: str = "pending", rounds: int = 5) -> Run:
    """A committed run with random settings, moved to ``status``."""
    run_in = RunCreate(
        task=random.choice(["digits", "mnist1d"]),
        method=random.choice(["apt", "fp32", "qat8"]),
        clients=random.randint(1, 20),
        fraction=random.choice([0.5, 1.0]),
        rounds=rounds,
        alpha=random.choice([0.1, 1.0]),
        seed=random.randint(0, 1000),
    )
    run = crud.create_run(
        session=db, **run_in.model_dump(), settings=run_in.run_settings().to_dict()
    )
    if status != "queued":  # created queued
        crud.set_run_status(session=db, run_id=run.id, status="pending")
    if status not in ("queued", "pending"):
        if status != "running":
            crud.set_run_status(session=db, run_id=run.id, status="running")
        crud.set_run_status(session=db, run_id=run.id, status=status)
    db.commit()
    return run


def default_bits(node_id: int, layer_index: int, round_: int) -> int:
    """A deterministic spread of bit-widths over nodes, layers and rounds."""
    return 6 + (node_id % 3) + layer_index + (round_ % 2)


def make_round_record(
    round_: int,
    *,
    nodes: Iterable[int] = (11, 12, 13),
    layers: Iterable[str] = ("conv1", "fc"),
    bits: Callable[[int, int, int], int] = default_bits,
    device_class: str = "standard",
    packed_model: bytes | None = b"packed-model",
    accuracy: float | None = None,
) -> RoundReport:
    """A consistent ``RoundReport`` with one trained reply per node."""
    layer_names = list(layers)
    clients = [
        ClientReport(
            node_id=node,
            device_class=device_class,
            partition_id=i,
            policy_version=1,
            energy_j=1.5,
            uplink_bytes=1000,
            downlink_bytes=2000,
            num_examples=100,
            train_loss=0.5,
            param_bytes=900,
            peak_memory_bytes=10_000,
            layers=[
                LayerReport(
                    layer=name,
                    bits=bits(node, j, round_),
                    exponent=-6,
                    gavg=0.25 * (j + 1) + 0.01 * node,
                    underflow=0.1,
                    checks=4,
                )
                for j, name in enumerate(layer_names)
            ],
        )
        for i, node in enumerate(nodes)
    ]
    all_bits = [layer.bits for client in clients for layer in client.layers]
    return RoundReport(
        round=round_,
        accuracy=0.5 + 0.01 * round_ if accuracy is None else accuracy,
        loss=1.0 / round_,
        energy_j=sum(c.energy_j for c in clients),
        uplink_bytes=sum(c.uplink_bytes for c in clients),
        downlink_bytes=sum(c.downlink_bytes for c in clients),
        participants=len(clients),
        failures=0,
        rejections=0,
        mean_bits=sum(all_bits) / len(all_bits) if all_bits else None,
        policy_version=1,
        clients=clients,
        global_bits={name: 8 for name in layer_names},
        packed_model=packed_model,
    )
