"""Tests of /api/v1/policy."""

from __future__ import annotations

from fastapi.testclient import TestClient

from apt_core.config import PrecisionPolicy

POLICY_FIELDS = (
    "t_min",
    "t_max",
    "bits_min",
    "bits_max",
    "bits_init",
    "check_every",
    "rounding",
    "act_bits",
    "err_bits",
    "adaptive",
)


def test_read_policy_seeded_version_1(client: TestClient, operator_headers: dict[str, str]) -> None:
    # Execute
    body = client.get("/api/v1/policy", headers=operator_headers).json()

    # Assert
    assert body["version"] == 1
    assert {k: body[k] for k in POLICY_FIELDS} == PrecisionPolicy().to_dict()
    assert body["overrides"] == {}


def test_update_policy_partial_creates_version(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Execute
    response = client.put(
        "/api/v1/policy",
        headers=admin_headers,
        json={"bits_max": 12, "overrides": {"mcu": {"bits_max": 8}}, "note": "cap bits"},
    )

    # Assert
    assert response.status_code == 200
    body = response.json()
    expected = PrecisionPolicy(bits_max=12).to_dict()
    assert {k: body[k] for k in POLICY_FIELDS} == expected
    assert (body["version"], body["author"], body["note"]) == (2, "alice", "cap bits")
    assert body["overrides"] == {"mcu": {"bits_max": 8}}
    assert client.get("/api/v1/policy", headers=admin_headers).json()["version"] == 2


def test_update_policy_full_body(client: TestClient, admin_headers: dict[str, str]) -> None:
    # Prepare
    full = PrecisionPolicy(
        t_min=1.0,
        t_max=3.0,
        bits_min=6,
        bits_max=14,
        bits_init=10,
        check_every=20,
        rounding="nearest",
        act_bits=10,
        err_bits=12,
        adaptive=False,
    ).to_dict()

    # Execute
    body = client.put("/api/v1/policy", headers=admin_headers, json=full).json()

    # Assert
    assert {k: body[k] for k in POLICY_FIELDS} == full


def test_update_policy_keeps_overrides_when_omitted(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Prepare
    client.put(
        "/api/v1/policy", headers=admin_headers, json={"overrides": {"mcu": {"bits_max": 8}}}
    )

    # Execute
    body = client.put("/api/v1/policy", headers=admin_headers, json={"t_min": 0.25}).json()

    # Assert
    assert (body["version"], body["overrides"]) == (3, {"mcu": {"bits_max": 8}})
    assert body["t_max"] == 1.0


def test_update_policy_t_max_too_small_names_t_max(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Execute
    response = client.put(
        "/api/v1/policy", headers=admin_headers, json={"t_min": 1.0, "t_max": 1.5}
    )

    # Assert
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "t_max"]
    assert "t_max" in detail[0]["msg"]
    assert client.get("/api/v1/policy", headers=admin_headers).json()["version"] == 1


def test_update_policy_bad_override_names_class_and_field(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Execute
    response = client.put(
        "/api/v1/policy", headers=admin_headers, json={"overrides": {"mcu": {"bits_max": 32}}}
    )

    # Assert
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "overrides", "mcu", "bits_max"]


def test_update_policy_unknown_field_names_it(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.put("/api/v1/policy", headers=admin_headers, json={"bitz": 3})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "bitz"]


def test_update_policy_wrong_type_names_field(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.put("/api/v1/policy", headers=admin_headers, json={"bits_max": "8"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "bits_max"]


def test_update_policy_operator_forbidden(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.put("/api/v1/policy", headers=operator_headers, json={"bits_max": 12})
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_read_policy_history_newest_first(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    # Prepare
    for bits in (14, 10):
        client.put("/api/v1/policy", headers=admin_headers, json={"bits_max": bits})

    # Execute
    body = client.get("/api/v1/policy/history", headers=admin_headers).json()

    # Assert
    assert body["count"] == 3
    seeded = PrecisionPolicy().bits_max
    assert [(p["version"], p["bits_max"]) for p in body["data"]] == [(3, 10), (2, 14), (1, seeded)]
    assert body["data"][-1]["author"] == "system"


def test_update_policy_huge_check_every_names_field(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.put("/api/v1/policy", headers=admin_headers, json={"check_every": 2**40})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "check_every"]


def test_update_policy_malformed_override_names_class(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.put(
        "/api/v1/policy",
        headers=admin_headers,
        json={"overrides": {"mcu": {"t_min": "fast", "bits_max": 8}}},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "overrides", "mcu", "t_min"]
