"""Coordinator settings, read once from ``APTFLEET_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Values that ship in examples and must never reach a production deployment.
PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", "password"})


def _parse_origins(value: Any) -> Any:
    """Accept ``a,b`` as well as a JSON list for the CORS origins."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            return json.loads(value)
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the coordinator.

    Parameters
    ----------
    DATABASE_URL : str (default: ``sqlite:///<DATA_DIR>/aptfleet.db``)
        SQLAlchemy URL of the database, e.g. ``postgresql+psycopg://user:pw@db:5432/aptfleet``.
    DATA_DIR : Path (default: ``./.aptfleet``)
        Directory of the default SQLite file and other local state.
    SUPERLINK : str (default: "")
        Address of a Flower SuperLink; empty runs the simulation engine.
    ROUND_TIMEOUT : float (default: 600.0)
        Seconds a round waits for the sampled devices' replies (run_config
        ``round-timeout``); a device that has not replied by then counts as failed. A run's
        settings JSON may override it with ``round_timeout``.
    HOST : str (default: "127.0.0.1")
        Interface ``serve`` binds to.
    PORT : int (default: 8080)
        Port ``serve`` binds to.
    ENVIRONMENT : "development" | "production" (default: "development")
        Outside development, placeholder secrets are refused.
    MAX_BODY_BYTES : int (default: 1048576)
        Larger request bodies are answered with 413.
    CORS_ORIGINS : list[str] (default: [])
        Browser origins allowed to call the API; empty keeps CORS closed.
    """

    model_config = SettingsConfigDict(env_prefix="APTFLEET_", extra="ignore")

    DATABASE_URL: str = ""
    DATA_DIR: Path = Path("./.aptfleet")
    SUPERLINK: str = ""
    ROUND_TIMEOUT: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8080, ge=1, le=65535)
    ENVIRONMENT: Literal["development", "production"] = "development"
    MAX_BODY_BYTES: int = Field(default=1_048_576, ge=1)
    CORS_ORIGINS: Annotated[list[str], NoDecode, BeforeValidator(_parse_origins)] = []

    @model_validator(mode="after")
    def _default_database_url(self) -> Settings:
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{self.DATA_DIR / 'aptfleet.db'}"
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        password = urlsplit(self.DATABASE_URL).password
        if (self.ENVIRONMENT != "development" and password is not None
                and password.lower() in PLACEHOLDER_SECRETS):
            raise ValueError(
                f"The password in APTFLEET_DATABASE_URL is the placeholder {password!r}; "
                f"set a real secret when APTFLEET_ENVIRONMENT={self.ENVIRONMENT!r}.")
        return self


settings = Settings()
