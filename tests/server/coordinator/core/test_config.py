"""Tests of server.coordinator.core.config.Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.coordinator.core.config import Settings


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    for name in ("DATABASE_URL", "DATA_DIR", "CORS_ORIGINS", "ENVIRONMENT"):
        monkeypatch.delenv(f"APTFLEET_{name}", raising=False)

    # Execute
    settings = Settings()

    # Assert
    assert settings.DATABASE_URL == f"sqlite:///{Path('.aptfleet') / 'aptfleet.db'}"
    assert (settings.HOST, settings.PORT, settings.SUPERLINK) == ("127.0.0.1", 8080, "")
    assert settings.CORS_ORIGINS == []
    assert settings.ENVIRONMENT == "development"


def test_settings_read_prefixed_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare
    monkeypatch.setenv("APTFLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APTFLEET_PORT", "9000")
    monkeypatch.setenv("APTFLEET_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("APTFLEET_SUPERLINK", "127.0.0.1:9093")

    # Execute
    settings = Settings()

    # Assert
    assert settings.DATABASE_URL == f"sqlite:///{tmp_path / 'aptfleet.db'}"
    assert settings.PORT == 9000
    assert settings.CORS_ORIGINS == ["https://a.example", "https://b.example"]
    assert settings.SUPERLINK == "127.0.0.1:9093"


def test_settings_cors_origins_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APTFLEET_CORS_ORIGINS", '["https://a.example"]')
    assert Settings().CORS_ORIGINS == ["https://a.example"]


def test_settings_placeholder_password_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="placeholder 'changethis'"):
        Settings(
            ENVIRONMENT="production", DATABASE_URL="postgresql+psycopg://app:changethis@db/aptfleet"
        )


def test_settings_placeholder_password_allowed_in_development() -> None:
    url = "postgresql+psycopg://app:changethis@db/aptfleet"
    assert Settings(ENVIRONMENT="development", DATABASE_URL=url).DATABASE_URL == url


def test_settings_unknown_environment_names_field() -> None:
    with pytest.raises(ValidationError, match="ENVIRONMENT"):
        Settings(ENVIRONMENT="staging")
