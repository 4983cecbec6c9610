"""The aptfleet ServerApp: run settings from run_config, the APTFedAvg strategy, records.

``context.run_config`` keys (all optional; ``run_simulation`` passes an empty config):
see :data:`server.flower.settings.RUN_CONFIG_DEFAULTS`, derived from the settings
dataclasses. ``db-url`` + ``coordinator-run-id`` select the
coordinator's DB-backed policy provider and recorder (:func:`build_provider_and_recorder`);
without them the policy is the named one and rounds go to ``out-dir/rounds.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result
from torch import nn
from torch.utils.data import TensorDataset

from apt_core import federated as fed
from apt_core.config import resolve_policy
from apt_core.tasks.data import load_task
from server.flower.global_model import Evaluator, Recorder
from server.flower.records import RoundReport
from server.flower.run_health import RunFailed, RunHealth
from server.flower.settings import RUN_CONFIG_DEFAULTS, ServerSettings
from server.flower.strategy import APTFedAvg, PolicyProvider

log = logging.getLogger(__name__)


class JsonlRecorder:
    """Records each round to files in ``out_dir`` (no DB).

    Appends each round record to ``out_dir/rounds.jsonl`` and keeps the latest packed model as
    ``out_dir/global-model.bin``.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, record: RoundReport) -> None:
        """Append ``record`` as one JSON line and write its packed model, if any."""
        with (self.out_dir / "rounds.jsonl").open("a") as fh:
            fh.write(json.dumps(record.to_dict()) + "\n")
        if record.packed_model is not None:
            (self.out_dir / "global-model.bin").write_bytes(record.packed_model)


def _log_recorder(record: RoundReport) -> None:
    log.info(
        "Round %s: accuracy=%s participants=%s failures=%s rejections=%s mean_bits=%s",
        record.round,
        record.accuracy,
        record.participants,
        record.failures,
        record.rejections,
        record.mean_bits,
    )


@dataclass(frozen=True)
class DbComposition:
    """The coordinator's seams for one of its runs: policy, recorder, resume point, failure."""

    provider: PolicyProvider
    recorder: Recorder
    start_round: int
    checkpoint: bytes | None
    fail: Callable[[str], None]


def db_composition(db_url: str, run_id: int) -> DbComposition:
    """Bind the strategy to coordinator run ``run_id`` in the database at ``db_url``.

    The only place where the Flower app imports the coordinator (tests/test_architecture.py
    holds it to that): the fleet policy is read from the database at every round start, each
    round is stored in one transaction, and a resumed run continues after its last stored
    round from that round's checkpoint. A run created with its own ``policy`` trains with
    that one (``run_store.run_policy_provider``).

    Raises
    ------
    ValueError
        If ``run_id`` does not name a run (<= 0).
    """
    if run_id <= 0:
        raise ValueError(
            f"run_config 'coordinator-run-id' = {run_id} must name the "
            "coordinator's run when 'db-url' is set."
        )
    from server.coordinator.core.db import make_engine, make_session_factory
    from server.coordinator.services.run_store import (
        DbRecorder,
        resume_point,
        run_policy_provider,
    )

    factory = make_session_factory(make_engine(db_url))
    with factory() as session:
        start, checkpoint = resume_point(session, run_id)
    recorder = DbRecorder(factory, run_id)
    return DbComposition(
        run_policy_provider(factory, run_id), recorder, start, checkpoint, recorder.fail
    )


def build_provider_and_recorder(run_config: Mapping[str, Any]) -> tuple[PolicyProvider, Recorder]:
    """The policy provider and round recorder for a run.

    Without ``db-url`` the provider always answers version 1 of the named ``policy`` (no
    overrides) and the recorder writes ``out-dir/rounds.jsonl`` (or only logs when
    ``out-dir`` is empty). With ``db-url`` (the coordinator submitting to a SuperLink)
    see :func:`db_composition`.
    """
    c = {**RUN_CONFIG_DEFAULTS, **dict(run_config)}
    if str(c["db-url"]):
        db = db_composition(str(c["db-url"]), int(c["coordinator-run-id"]))
        return db.provider, db.recorder
    policy = resolve_policy(str(c["policy"]))
    answer: tuple[int, Any, dict[str, dict[str, Any]]] = (1, policy, {})

    def provider() -> tuple[int, Any, dict[str, dict[str, Any]]]:
        return answer

    out = str(c["out-dir"])
    return provider, (JsonlRecorder(Path(out)) if out else _log_recorder)


@lru_cache(maxsize=2)
def _test_set(task: str) -> TensorDataset:
    data = load_task(task)
    return TensorDataset(data.x_test, data.y_test)


def make_evaluator(task: str, method: str) -> Evaluator:
    """Central evaluation on the task's test split: (accuracy, loss)."""

    def evaluate(model: nn.Module) -> tuple[float, float]:
        return fed.evaluate_model(model, _test_set(task), method)

    return evaluate


def run_strategy(
    grid: Grid, settings: ServerSettings, provider: PolicyProvider, recorder: Recorder | None
) -> Result:
    """Build :class:`APTFedAvg` and run it for ``settings.rounds`` rounds.

    Raises
    ------
    RunFailed
        If a round aggregated no reply, or the run's devices mostly failed
        (:mod:`server.flower.run_health`); the rounds before are recorded.
    """
    offset = settings.start_round
    if offset and recorder is not None:
        inner = recorder

        def recorder(record: RoundReport) -> None:  # noqa: F811 - renumbered rounds
            inner(dataclasses.replace(record, round=record.round + offset))

    health = RunHealth(settings.max_failure_share)
    strategy = APTFedAvg(
        settings=settings.run,
        policy_provider=provider,
        recorder=health.recorder(recorder),
        lr_rounds=settings.rounds,
        round_offset=offset,
        evaluator=make_evaluator(settings.run.task, settings.run.method),
        fraction_train=settings.fraction_train,
        fraction_evaluate=settings.fraction_evaluate,
        min_train_nodes=min(settings.min_nodes, 2),
        min_evaluate_nodes=1,
        min_available_nodes=settings.min_nodes,
        sampling=settings.sampling,
        identify_timeout=min(settings.timeout, 60.0),
    )
    initial = (
        strategy.initial_arrays()
        if settings.checkpoint is None
        else strategy.arrays_from_checkpoint(settings.checkpoint)
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=settings.rounds - offset,
        timeout=settings.timeout,
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
        evaluate_fn=strategy.evaluate_global,
    )
    health.check_run()
    return result


def create_server_app(
    settings: ServerSettings, provider: PolicyProvider, recorder: Recorder | None
) -> ServerApp:
    """A ServerApp bound to explicit settings.

    This is the simulation's channel: run_config is empty under ``run_simulation``. The
    process's torch runs on one thread: the simulated devices (Ray actors) hold every CPU,
    and torch's intra-op threads then wait on each other for every small tensor op (one
    reply's validation measured 37-85 ms on 2 threads, 5-7 ms on 1, on the 2-CPU machine).
    """
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)
        run_strategy(grid, settings, provider, recorder)

    return server_app


app = ServerApp()


def _route_logs_to_flwr() -> None:
    """Send this app's INFO logs through Flower's handlers, so ``flwr log`` shows them."""
    handlers = logging.getLogger("flwr").handlers
    for name in ("server", "apt_core"):
        lg = logging.getLogger(name)
        if not lg.handlers:
            for h in handlers:
                lg.addHandler(h)
            lg.setLevel(logging.INFO)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Deployment / ``flwr run`` entry point: everything comes from run_config."""
    _route_logs_to_flwr()
    settings = ServerSettings.from_run_config(context.run_config)
    db_url = str(context.run_config.get("db-url", ""))
    if not db_url:
        provider, recorder = build_provider_and_recorder(context.run_config)
        run_strategy(grid, settings, provider, recorder)
        return
    # a coordinator run: continue after the rounds it already stored
    db = db_composition(db_url, int(context.run_config.get("coordinator-run-id", 0)))
    settings = dataclasses.replace(settings, start_round=db.start_round, checkpoint=db.checkpoint)
    try:
        run_strategy(grid, settings, db.provider, db.recorder)
    except RunFailed as exc:
        db.fail(str(exc))  # the coordinator's job sees only that the Flower run failed
        raise
