"""The coordinator's database behind the Flower strategy: policy provider and recorder."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from apt_core.config import PrecisionPolicy, resolve_policy
from apt_core.cost import profile_layers, step_energy
from apt_core.tasks.data import load_task
from apt_core.tasks.networks import build_model
from server.coordinator import crud
from server.coordinator.core.db import begin_write
from server.coordinator.exceptions import (
    DuplicateRoundError,
    NotFoundError,
    ResumeError,
    RunStateError,
    RunStopped,
)
from server.coordinator.services.run_settings import run_settings_of
from server.flower.budgets import BudgetCapper, parse_budgets
from server.flower.records import RoundReport

log = logging.getLogger(__name__)
T = TypeVar("T")

PolicyAnswer = tuple[int, PrecisionPolicy, dict[str, dict[str, Any]]]


#: How long a round end (or start) waits for an unreachable database before the run fails.
DB_OUTAGE_TOLERANCE_S = 180.0


def with_db_retry(what: str, fn: Callable[[], T], tolerance_s: float = DB_OUTAGE_TOLERANCE_S) -> T:
    """Run one transaction, retrying while the database is unreachable.

    Each attempt is a whole transaction in a fresh session, so a failed attempt leaves
    nothing behind (the round is stored entirely or not at all).
    """
    deadline = time.monotonic() + tolerance_s
    delay = 0.5
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "%s: database unreachable (%s); retrying in %.1f s", what, type(exc).__name__, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


class DbPolicyProvider:
    """Reads the current policy version at each round start (one short transaction).

    With a ``capper`` (the run's model and workload) the version's device-class budgets
    become caps: each budgeted class's ``bits_max`` in the answer's overrides. A budget
    the run's model cannot meet raises ``BudgetError``; the strategy then keeps the
    previous version (or fails the run if there is none).
    """

    def __init__(
        self, session_factory: sessionmaker[Session], capper: BudgetCapper | None = None
    ) -> None:
        self._session_factory = session_factory
        self._capper = capper

    def __call__(self) -> PolicyAnswer:
        """The current fleet policy (version, policy, per-class overrides), retried on outage."""

        def read() -> tuple[PolicyAnswer, dict[str, dict[str, Any]]]:
            with self._session_factory() as session:
                row = crud.get_current_policy_row(session=session)
                return crud.current_policy(session), dict(row.budgets or {})

        answer, budgets = with_db_retry("policy read", read)
        if self._capper is None or not budgets:
            return answer
        return self._capper.answer(answer, parse_budgets(budgets))


#: Policy version of the rounds of a run with its own policy (fleet versions start at 1).
OWN_POLICY_VERSION = 0


def run_policy_provider(
    session_factory: sessionmaker[Session], run_id: int
) -> Callable[[], PolicyAnswer]:
    """The policy provider of run ``run_id``.

    A run created with a ``policy`` trains every device with exactly that policy in every
    round, as version :data:`OWN_POLICY_VERSION` without class overrides; fleet updates do
    not reach it. A run without one follows the fleet (:class:`DbPolicyProvider`), its
    device-class budgets capped for the run's model and workload.

    Raises
    ------
    NotFoundError
        If the run does not exist.
    PolicyError
        If the stored policy no longer resolves (the API validated it at creation).
    """

    def read() -> tuple[str | None, BudgetCapper]:
        with session_factory() as session:
            run = crud.get_run(session=session, run_id=run_id)
            if run is None:
                raise NotFoundError(f"Run {run_id} not found")
            return run.policy, BudgetCapper.for_run(run_settings_of(run), run.clients)

    own, capper = with_db_retry(f"run {run_id} policy", read)
    if own is None:
        return DbPolicyProvider(session_factory, capper)
    answer: PolicyAnswer = (OWN_POLICY_VERSION, resolve_policy(own), {})
    log.info("run %s trains with its own policy %r (version %s)", run_id, own, OWN_POLICY_VERSION)
    return lambda: answer


class DbRecorder:
    """Stores each round record of run ``run_id`` in one transaction at round end.

    A run the API stopped (or a coordinator restart marked interrupted) is not written
    to: the recorder raises :class:`RunStopped` so the job ends.
    """

    def __init__(self, session_factory: sessionmaker[Session], run_id: int) -> None:
        self._session_factory = session_factory
        self.run_id = run_id

    def __call__(self, record: RoundReport) -> None:
        """Store ``record`` with its checkpoint, retrying the transaction through an outage.

        A round an earlier attempt committed before its connection dropped is not stored
        twice.

        Raises
        ------
        RunStopped
            If the run is gone or no longer running.
        """
        attempts = 0

        def store() -> None:
            nonlocal attempts
            attempts += 1
            with self._session_factory() as session:
                begin_write(session)
                run = crud.get_run(session=session, run_id=self.run_id)
                if run is None or run.status != "running":
                    raise RunStopped(
                        f"Run {self.run_id} is "
                        f"{'gone' if run is None else run.status}; not "
                        f"recording round {record.round}."
                    )
                try:
                    crud.record_round(session=session, run_id=self.run_id, record=record)
                except DuplicateRoundError:
                    if attempts == 1:
                        raise
                    # an earlier attempt committed before the connection dropped
                    log.info(
                        "run %s round %s was stored by an earlier attempt",
                        self.run_id,
                        record.round,
                    )
                    return
                session.commit()

        with_db_retry(f"run {self.run_id} round {record.round}", store)
        log.info("run %s round %s stored (accuracy %s)", self.run_id, record.round, record.accuracy)

    def fail(self, reason: str) -> None:
        """End the run ``failed`` with ``reason`` (a run already finished or stopped stays so).

        The ServerApp calls it when the run fails as a whole (``RunFailed``): on a SuperLink
        the job then sees only that the Flower run failed, so the reason is stored here.
        """

        def write() -> None:
            with self._session_factory() as session:
                begin_write(session)
                try:
                    crud.set_run_status(
                        session=session, run_id=self.run_id, status="failed", error=reason
                    )
                    session.commit()
                except RunStateError:
                    session.rollback()

        with_db_retry(f"run {self.run_id} status", write)
        log.error("run %s failed: %s", self.run_id, reason)


def resume_point(session: Session, run_id: int) -> tuple[int, bytes | None]:
    """Rounds already recorded for a run and the checkpoint to continue from.

    Every round is stored with its checkpoint in one transaction, so the latest
    checkpoint belongs to the last recorded round; anything else is refused.
    """
    done = crud.list_rounds(session=session, run_id=run_id)
    if not done:
        return 0, None
    latest = crud.get_latest_checkpoint(session=session, run_id=run_id)
    if latest is None or latest.round != done[-1].round:
        raise ResumeError(
            f"Run {run_id}: last round {done[-1].round} has no checkpoint "
            f"(latest: {None if latest is None else latest.round})."
        )
    return done[-1].round, latest.packed


def fp32_estimate(
    *,
    task: str,
    arch: str,
    examples: Mapping[int, int],
    trained: int,
    client_rounds: int,
    local_epochs: int,
    batch_size: int,
) -> dict[str, float]:
    """What the same federated training would cost in plain fp32 FedAvg (cost model).

    Energy: each trained client-round's examples through fp32 GEMMs plus fp32 parameter
    and momentum movement per step (``apt_core.cost``); bytes: a float32 model each way.

    Parameters
    ----------
    task, arch : str
        The run's task and network.
    examples : Mapping[int, int]
        Trained client-rounds by their number of examples: ``{num_examples: count}``.
    trained, client_rounds : int
        Client-rounds that trained (uplink), and every client-round (downlink).
    local_epochs, batch_size : int
        The run's local training settings.
    """
    model = build_model(task, arch)
    profiles = profile_layers(model, load_task(task).x_train[:2])
    n_params = sum(p.params for p in profiles.values())
    per_sample = step_energy(profiles, 1, "fp32", state_bits=32)
    energy = 0.0
    for n, count in examples.items():
        steps = math.ceil(n / batch_size) * local_epochs
        energy += count * (per_sample.gemm_j * n * local_epochs + per_sample.move_j * steps)
    return {
        "energy_j": energy,
        "uplink_bytes": float(4 * n_params * trained),
        "downlink_bytes": float(4 * n_params * client_rounds),
        "param_bytes": float(4 * n_params),
    }


def run_savings(session: Session, run_id: int) -> dict[str, Any]:
    """Savings of a finished run against fp32 FedAvg on the same client-rounds, as fractions.

    The fp32 cost comes from the cost model (Horowitz 45 nm); 0.6 means 60% less. Reads
    sums, not rows: a run of 1,000 devices x 250 rounds loads no per-device row.
    """
    run = crud.get_run(session=session, run_id=run_id)
    assert run is not None
    totals = crud.run_totals(session=session, run_id=run_id)
    clients = crud.client_totals(session=session, run_id=run_id)
    settings = run_settings_of(run)
    est = fp32_estimate(
        task=settings.task,
        arch=settings.arch,
        examples=clients["examples"],
        trained=clients["trained"],
        client_rounds=clients["client_rounds"],
        local_epochs=settings.local_epochs,
        batch_size=settings.batch_size,
    )
    trained = clients["trained"]
    param_bytes = clients["trained_param_bytes"] / trained if trained else 0.0

    def saving(value: float, base: float) -> float | None:
        return None if not base else 1.0 - value / base

    return {
        "energy": saving(totals["energy_j"], est["energy_j"]),
        "parameter_memory": saving(param_bytes, est["param_bytes"]),
        "uplink_bytes": saving(totals["uplink_bytes"], est["uplink_bytes"]),
        "downlink_bytes": saving(totals["downlink_bytes"], est["downlink_bytes"]),
    }
