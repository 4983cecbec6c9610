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
    SUPERLINK_CA_FILE : Path | None (default: None)
        CA certificate the SuperLink's TLS certificate is verified with (``ca.crt`` of
        ``aptfleet fleet certs``); None uses the system's trust store.
    SUPERLINK_INSECURE : bool (default: False)
        Talk to the SuperLink in plain text (a ``fleet up --insecure`` fleet); refused
        outside development.
    RAY_ADDRESS : str (default: "")
        Address (``host:port`` of its GCS) of an existing Ray cluster that runs on the
        simulation engine join instead of starting one each (``ray start --head --port
        6379`` prints it); every node must have this checkout and environment at the same
        path. Empty: each run starts its own single-node cluster on 127.0.0.1.
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
    MAX_ACTIVE_RUNS : int (default: 1)
        Runs whose job may be started or training at once; ``POST /runs`` queues the rest
        and the coordinator starts them in creation order as slots free up (the queue
        survives a restart). Each run on the embedded simulation engine starts its own Ray
        cluster: about 1 GB of memory and, while it trains, the CPU cores it may use
        (2 per run), so raise it only on a machine with that much to spare per extra run,
        e.g. ``APTFLEET_MAX_ACTIVE_RUNS=3`` on 8 cores and 8 GB. Runs submitted to a
        SuperLink cost the coordinator little, so a higher value fits there. 0 holds every
        run queued (maintenance).
    RUN_START_ATTEMPTS : int (default: 3)
        Times a run's job is started before the run fails, when the job exits before
        marking the run running (e.g. Ray failed to start); the reason is stored on the run.
    RUN_START_BACKOFF_S : float (default: 5.0)
        Wait before the second start attempt; it doubles for each further one.
    JOB_HEARTBEAT_TIMEOUT : float (default: 600.0)
        A job writes a heartbeat every few seconds; one silent for this long is taken as
        hung: its process group is ended and its run marked interrupted (resumable).
    HEADER_TIMEOUT : float (default: 10.0)
        Seconds ``serve`` gives a connection to send a complete request head (request line
        and headers), from connecting or from the previous response; then it is closed.
    BODY_TIMEOUT : float (default: 30.0)
        Seconds a request has to send its whole body; a slower one is answered 408. No
        request waits for admission or reaches a route before its body is complete.
    MAX_REQUESTS_PER_CLIENT : int (default: 128)
        Requests one client address (behind a trusted proxy: its ``X-Forwarded-For``) may
        have open at once, body still arriving included; more are answered 429.
    METRICS_TOKEN : str (default: "")
        When set, ``GET /metrics`` needs ``Authorization: Bearer <METRICS_TOKEN>``.
    TLS : bool (default: False)
        The coordinator is reached over HTTPS (directly or through a TLS proxy): responses
        carry ``Strict-Transport-Security``.
    SESSION_MAX_AGE_S : int (default: 43200)
        Lifetime of a dashboard sign-in (server-side session), in seconds; it also ends when
        its token is revoked or expires, or on sign-out.
    AUTH_FAILURE_LIMIT : int (default: 10)
        Failed authentications (bad bearer token, bad sign-in) one client address may make
        within ``AUTH_FAILURE_WINDOW_S``; further attempts get 429 with ``Retry-After``.
        Counted in memory, per process.
    AUTH_FAILURE_WINDOW_S : float (default: 60.0)
        The window of ``AUTH_FAILURE_LIMIT``, in seconds.
    """

    model_config = SettingsConfigDict(env_prefix="APTFLEET_", extra="ignore")

    DATABASE_URL: str = ""
    DATA_DIR: Path = Path("./.aptfleet")
    SUPERLINK: str = ""
    SUPERLINK_CA_FILE: Path | None = None
    SUPERLINK_INSECURE: bool = False
    RAY_ADDRESS: str = ""
    ROUND_TIMEOUT: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8080, ge=1, le=65535)
    ENVIRONMENT: Literal["development", "production"] = "development"
    MAX_BODY_BYTES: int = Field(default=1_048_576, ge=1)
    CORS_ORIGINS: Annotated[list[str], NoDecode, BeforeValidator(_parse_origins)] = []
    MAX_ACTIVE_RUNS: int = Field(default=1, ge=0, le=64)
    RUN_START_ATTEMPTS: int = Field(default=3, ge=1, le=20)
    RUN_START_BACKOFF_S: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False)
    JOB_HEARTBEAT_TIMEOUT: float = Field(default=600.0, ge=5, le=86400, allow_inf_nan=False)
    HEADER_TIMEOUT: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    BODY_TIMEOUT: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    MAX_REQUESTS_PER_CLIENT: int = Field(default=128, ge=1)
    METRICS_TOKEN: str = Field(default="", repr=False)
    TLS: bool = False
    SESSION_MAX_AGE_S: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    AUTH_FAILURE_LIMIT: int = Field(default=10, ge=1, le=10_000)
    AUTH_FAILURE_WINDOW_S: float = Field(default=60.0, gt=0, le=24 * 3600, allow_inf_nan=False)

    @model_validator(mode="after")
    def _default_database_url(self) -> Settings:
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{self.DATA_DIR / 'aptfleet.db'}"
        return self

    @model_validator(mode="after")
    def _refuse_insecure_superlink(self) -> Settings:
        if self.SUPERLINK_INSECURE and self.SUPERLINK_CA_FILE is not None:
            raise ValueError(
                "APTFLEET_SUPERLINK_INSECURE is set together with "
                f"APTFLEET_SUPERLINK_CA_FILE={self.SUPERLINK_CA_FILE}; TLS with "
                "that CA or plain text, not both."
            )
        if self.SUPERLINK_INSECURE and self.ENVIRONMENT != "development":
            raise ValueError(
                "APTFLEET_SUPERLINK_INSECURE=true (no TLS to the SuperLink) is "
                f"refused when APTFLEET_ENVIRONMENT={self.ENVIRONMENT!r}."
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        password = urlsplit(self.DATABASE_URL).password
        if (
            self.ENVIRONMENT != "development"
            and password is not None
            and password.lower() in PLACEHOLDER_SECRETS
        ):
            raise ValueError(
                f"The password in APTFLEET_DATABASE_URL is the placeholder {password!r}; "
                f"set a real secret when APTFLEET_ENVIRONMENT={self.ENVIRONMENT!r}."
            )
        if self.ENVIRONMENT != "development" and self.METRICS_TOKEN.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "APTFLEET_METRICS_TOKEN is a placeholder; set a real secret (or leave it "
                f"empty for a public /metrics) when APTFLEET_ENVIRONMENT={self.ENVIRONMENT!r}."
            )
        return self


settings = Settings()
