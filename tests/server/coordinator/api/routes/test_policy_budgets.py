"""Tests of device-class budgets in /api/v1/policy (admin only, 422 on a budget no width fits)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from apt_core.federated import RunSettings
from apt_core.federated.budget import training_memory_bytes
from server.flower.budgets import BudgetCapper, model_profiles

#: Modelled training memory of a digits device (the larger of the two REST models) at
#: 6, 8 and 12 bits, at the default run settings with 10 devices.
_CAPPER = BudgetCapper.for_run(RunSettings(task="digits"), 10)


def _memory(bits: int) -> int:
    return training_memory_bytes(model_profiles("digits", "cnn"), bits, _CAPPER.workload)


FLEET = {
    "mcu": {"memory_bytes": _memory(6)},
    "phone": {"memory_bytes": _memory(8), "energy_j": 1.0},
    "gateway": {"memory_bytes": _memory(12)},
}


def _put(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return client.put("/api/v1/policy", headers=headers, json=body)


def test_update_policy_stores_budgets(client: TestClient, admin_headers: dict[str, str]) -> None:
    # Execute
    response = _put(client, admin_headers, {"budgets": FLEET, "note": "mixed fleet"})

    # Assert
    assert response.status_code == 200, response.text
    assert response.json()["budgets"] == FLEET
    current = client.get("/api/v1/policy", headers=admin_headers).json()
    assert (current["version"], current["budgets"]) == (2, FLEET)


def test_update_policy_keeps_budgets_when_omitted_and_clears_with_empty(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Prepare
    _put(client, admin_headers, {"budgets": FLEET})

    # Execute
    kept = _put(client, admin_headers, {"t_min": 0.5}).json()
    cleared = _put(client, admin_headers, {"budgets": {}}).json()

    # Assert
    assert kept["budgets"] == FLEET
    assert cleared["budgets"] == {}


def test_update_policy_budget_no_width_fits_is_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Prepare: one byte short of the fleet's bits_min (4) on digits
    short = _memory(4) - 1

    # Execute
    response = _put(client, admin_headers, {"budgets": {"mcu": {"memory_bytes": short}}})

    # Assert
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "budgets", "mcu", "memory_bytes"]
    assert detail["input"] == short
    assert f"'memory_bytes' = {short}" in detail["msg"] and "digits/cnn" in detail["msg"]
    assert client.get("/api/v1/policy", headers=admin_headers).json()["version"] == 1


def test_update_policy_energy_budget_no_width_fits_is_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Execute
    body = {"budgets": {"phone": {"memory_bytes": 10**9, "energy_j": 1e-9}}}
    response = _put(client, admin_headers, body)

    # Assert
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "budgets", "phone", "energy_j"]
    assert detail["input"] == 1e-9


def test_update_policy_higher_bits_min_breaks_stored_budget_is_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Prepare: mcu fits 6 bits at most
    _put(client, admin_headers, {"budgets": FLEET})

    # Execute
    response = _put(client, admin_headers, {"bits_min": 8})

    # Assert
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "budgets", "mcu", "memory_bytes"]


def test_update_policy_budget_schema_errors_are_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Execute
    zero = _put(client, admin_headers, {"budgets": {"mcu": {"memory_bytes": 0}}})
    extra = _put(client, admin_headers, {"budgets": {"mcu": {"memory_bytes": 10, "watts": 2}}})
    bad_class = _put(client, admin_headers, {"budgets": {"m c u": {"memory_bytes": 10**9}}})

    # Assert
    assert zero.status_code == extra.status_code == bad_class.status_code == 422
    assert zero.json()["detail"][0]["loc"] == ["body", "budgets", "mcu", "memory_bytes"]
    assert extra.json()["detail"][0]["loc"] == ["body", "budgets", "mcu", "watts"]
    assert bad_class.json()["detail"][0]["loc"] == ["body", "budgets", "m c u"]


def test_update_policy_budgets_operator_forbidden(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    response = _put(client, operator_headers, {"budgets": FLEET})

    # Assert
    assert response.status_code == 403
