"""The run settings a stored run trains with, read from its row in one place."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from apt_core.federated import RunSettings
from server.coordinator.tables import Run

_FIELDS = frozenset(f.name for f in fields(RunSettings))


def run_settings_of(run: Run) -> RunSettings:
    """The ``RunSettings`` of a stored run.

    ``run.settings`` holds ``RunSettings.to_dict()`` as of the run's creation, so a resumed
    run keeps its settings when the defaults change. The columns the API shows (task,
    method, alpha, seed) take precedence. Rows written before the settings were stored
    hold the request body instead; its keys that are not run settings (clients, rounds,
    policy, ...) are skipped and the missing settings take today's defaults, as those runs
    always did.

    Parameters
    ----------
    run : Run
        A stored run.

    Returns
    -------
    RunSettings
        Validated settings; raises ``SettingsError`` if the stored ones are invalid.
    """
    stored: dict[str, Any] = {k: v for k, v in (run.settings or {}).items() if k in _FIELDS}
    stored.update(task=run.task, method=run.method, alpha=run.alpha, seed=run.seed)
    return RunSettings.from_dict(stored)
