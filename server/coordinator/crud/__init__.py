"""Data access of the coordinator: keyword-only functions that flush and never commit.

The caller owns the transaction: routes, services and the run launcher commit (or roll
back) once per unit of work. Everything is re-exported here, so
``from server.coordinator import crud`` and ``crud.record_round(...)`` is all callers need.
"""

from server.coordinator.crud.devices import device_history, get_device, list_devices, upsert_device
from server.coordinator.crud.policies import (
    create_policy_version,
    current_policy,
    get_current_policy_row,
    list_policies,
    policy_of,
    seed_default_policy,
)
from server.coordinator.crud.rounds import (
    fleet_totals,
    get_latest_checkpoint,
    list_client_rounds,
    list_layer_precision,
    list_rounds,
    precision_summary,
    record_round,
)
from server.coordinator.crud.runs import (
    count_active_runs,
    create_run,
    get_run,
    list_runs,
    mark_interrupted_runs,
    reopen_run,
    set_run_savings,
    set_run_status,
)
from server.coordinator.crud.tokens import authenticate_token, create_token, revoke_token

__all__ = [
    "authenticate_token",
    "count_active_runs",
    "create_policy_version",
    "create_run",
    "create_token",
    "current_policy",
    "device_history",
    "fleet_totals",
    "get_current_policy_row",
    "get_device",
    "get_latest_checkpoint",
    "get_run",
    "list_client_rounds",
    "list_devices",
    "list_layer_precision",
    "list_policies",
    "list_rounds",
    "list_runs",
    "mark_interrupted_runs",
    "policy_of",
    "precision_summary",
    "record_round",
    "reopen_run",
    "revoke_token",
    "seed_default_policy",
    "set_run_savings",
    "set_run_status",
    "upsert_device",
]
