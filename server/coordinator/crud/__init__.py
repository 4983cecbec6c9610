"""Data access of the coordinator: keyword-only functions that flush and never commit.

List endpoints read through the ``page_*`` functions: each takes ``cursor`` (the previous
page's ``next_cursor``, None first) and ``limit`` and returns a ``core.pagination.Page``
(``data``, ``count`` over every page, ``next_cursor``); a malformed cursor raises
``InvalidQueryError`` (HTTP 422 naming ``cursor``). ``precision_summary`` and
``run_totals`` read what ``record_round`` summarised at write time: their cost does not
grow with the fleet or the number of rounds.

The caller owns the transaction: routes, services and the run launcher commit (or roll
back) once per unit of work. Everything is re-exported here, so
``from server.coordinator import crud`` and ``crud.record_round(...)`` is all callers need.
"""

from server.coordinator.crud.devices import (
    device_history,
    get_device,
    list_devices,
    page_devices,
    upsert_devices,
)
from server.coordinator.crud.history import (
    client_totals,
    fleet_totals,
    get_latest_checkpoint,
    list_client_rounds,
    list_rounds,
    page_client_rounds,
    page_layer_precision,
    page_precision_summary,
    page_rounds,
    precision_summary,
    run_totals,
)
from server.coordinator.crud.policies import (
    create_policy_version,
    current_policy,
    get_current_policy_row,
    list_policies,
    page_policies,
    policy_of,
    seed_default_policy,
)
from server.coordinator.crud.rounds import record_round
from server.coordinator.crud.runs import (
    admit_queued_runs,
    count_active_runs,
    count_start_attempt,
    create_run,
    get_run,
    list_runs,
    mark_interrupted_runs,
    page_runs,
    queue_positions,
    queued_run_ids,
    reopen_run,
    set_run_savings,
    set_run_status,
    touch_run,
)
from server.coordinator.crud.sessions import create_session, delete_session, session_token
from server.coordinator.crud.tokens import (
    authenticate_token,
    create_token,
    find_token,
    list_tokens,
    page_tokens,
    revoke_token,
    token_refusal,
    touch_token,
)

__all__ = [
    "client_totals",
    "admit_queued_runs",
    "authenticate_token",
    "count_active_runs",
    "count_start_attempt",
    "create_policy_version",
    "create_run",
    "create_session",
    "create_token",
    "current_policy",
    "delete_session",
    "device_history",
    "find_token",
    "fleet_totals",
    "get_current_policy_row",
    "get_device",
    "get_latest_checkpoint",
    "get_run",
    "list_client_rounds",
    "list_devices",
    "list_policies",
    "list_rounds",
    "list_runs",
    "list_tokens",
    "mark_interrupted_runs",
    "page_client_rounds",
    "page_devices",
    "page_layer_precision",
    "page_policies",
    "page_precision_summary",
    "page_rounds",
    "page_runs",
    "page_tokens",
    "policy_of",
    "precision_summary",
    "queue_positions",
    "queued_run_ids",
    "record_round",
    "reopen_run",
    "revoke_token",
    "run_totals",
    "seed_default_policy",
    "session_token",
    "set_run_savings",
    "set_run_status",
    "token_refusal",
    "touch_run",
    "touch_token",
    "upsert_devices",
]
