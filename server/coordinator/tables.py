"""Database tables of the coordinator (SQLAlchemy 2.0 declarative models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

RUN_STATUSES = ("queued", "pending", "running", "completed", "failed", "stopped", "interrupted")
#: A run in one of these states never changes state again.
TERMINAL_RUN_STATUSES = frozenset({"completed", "failed", "stopped", "interrupted"})
#: A run waiting in the admission queue (no job yet) ...
QUEUED_RUN_STATUS = "queued"
#: ... and runs that hold one of the ``APTFLEET_MAX_ACTIVE_RUNS`` slots (a job started).
STARTED_RUN_STATUSES = ("pending", "running")
#: Runs that are neither finished nor stopped: queued, starting or training.
ACTIVE_RUN_STATUSES = ("queued", "pending", "running")
DEVICE_STATUSES = ("active", "rejected", "failed", "offline")
TOKEN_ROLES = ("admin", "operator")

_UINT64_SPAN = 1 << 64
_INT64_MAX = (1 << 63) - 1


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UInt64(TypeDecorator[int]):
    """An unsigned 64-bit id (Flower node and run ids) kept in a signed BIGINT.

    The bit pattern is preserved, as Flower's own state store does, so ids above 2**63 - 1
    round-trip on SQLite and PostgreSQL alike.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        """The signed BIGINT with the bit pattern of unsigned ``value``."""
        if value is None:
            return None
        if not 0 <= value < _UINT64_SPAN:
            raise ValueError(f"Id {value} is not an unsigned 64-bit integer.")
        return value - _UINT64_SPAN if value > _INT64_MAX else value

    def process_result_value(self, value: int | None, dialect: Dialect) -> int | None:
        """The unsigned id whose bit pattern the stored BIGINT holds."""
        if value is None:
            return None
        return value + _UINT64_SPAN if value < 0 else value


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """``value`` with a naive time taken as UTC."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored time in UTC, timezone-aware (a naive one is taken as UTC)."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names (Alembic needs them)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Device(Base):
    """A Flower node that took part in at least one round."""

    __tablename__ = "devices"
    __table_args__ = (CheckConstraint(_in("status", DEVICE_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(UInt64, unique=True)
    device_class: Mapped[str] = mapped_column(String(32), default="standard")
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="active")


class Run(Base):
    """One federated training run."""

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(16))
    clients: Mapped[int] = mapped_column(Integer)
    fraction: Mapped[float] = mapped_column(Float)
    rounds: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str | None] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    flower_run_id: Mapped[int | None] = mapped_column(UInt64)
    current_round: Mapped[int] = mapped_column(Integer, default=0)
    latest_accuracy: Mapped[float | None] = mapped_column(Float)
    savings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Written by the run's job while it lives; a stale one means the job died silently.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Job starts so far (a job that dies before marking the run running is retried).
    start_attempts: Mapped[int] = mapped_column(Integer, default=0)


class Round(Base):
    """Aggregate outcome of one round of one run."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "round", name="uq_rounds_run_id_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    energy_j: Mapped[float] = mapped_column(Float, default=0.0)
    uplink_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    downlink_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    participants: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    rejections: Mapped[int] = mapped_column(Integer, default=0)
    #: Per-device rows of the round (trained, rejected or failed): a run's count of
    #: ``client_rounds`` is the sum over its rounds, not a scan of those rows.
    devices: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    mean_bits: Mapped[float | None] = mapped_column(Float)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    global_bits: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _round_fk(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["run_id", "round"],
        ["rounds.run_id", "rounds.round"],
        ondelete="CASCADE",
        name=f"fk_{table}_run_id_round_rounds",
    )


class ClientRound(Base):
    """One device's part in one round: trained, rejected or failed."""

    __tablename__ = "client_rounds"
    __table_args__ = (
        _round_fk("client_rounds"),
        UniqueConstraint(
            "run_id", "round", "device_id", name="uq_client_rounds_run_id_round_device_id"
        ),
        # one device's rows (its history, a run's ?device=, cascades); (run_id, round)
        # lookups use the unique key's prefix
        Index("ix_client_rounds_device_id_run_id_round", "device_id", "run_id", "round"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    partition_id: Mapped[int | None] = mapped_column(Integer)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    energy_j: Mapped[float] = mapped_column(Float, default=0.0)
    uplink_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    downlink_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    num_examples: Mapped[int] = mapped_column(Integer, default=0)
    train_loss: Mapped[float | None] = mapped_column(Float)
    param_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    peak_memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Highest weight width the device's class was sent this round (a budget's cap
    #: included); None for float methods and rows stored before budgets existed.
    bits_cap: Mapped[int | None] = mapped_column(Integer)
    rejected: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(Text)


class LayerPrecision(Base):
    """One layer's bit-width and Gavg on one device at the end of one round."""

    __tablename__ = "layer_precision"
    __table_args__ = (
        _round_fk("layer_precision"),
        UniqueConstraint(
            "run_id",
            "round",
            "device_id",
            "layer",
            name="uq_layer_precision_run_id_round_device_id_layer",
        ),
        Index(
            "ix_layer_precision_device_id_run_id_round_layer",
            "device_id",
            "run_id",
            "round",
            "layer",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(200))
    bits: Mapped[int] = mapped_column(Integer)
    exponent: Mapped[int] = mapped_column(Integer)
    gavg: Mapped[float] = mapped_column(Float)
    underflow: Mapped[float] = mapped_column(Float)
    checks: Mapped[int] = mapped_column(Integer, default=0)


class PrecisionSummary(Base):
    """One layer in one round of a run, aggregated over the devices that reported it.

    Written in the round's transaction from its ``layer_precision`` rows, so reading the
    summary costs the same at round 5 and at round 500.
    """

    __tablename__ = "precision_summaries"
    __table_args__ = (
        _round_fk("precision_summaries"),
        UniqueConstraint(
            "run_id", "round", "layer", name="uq_precision_summaries_run_id_round_layer"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    layer: Mapped[str] = mapped_column(String(200))
    devices: Mapped[int] = mapped_column(Integer)
    min_bits: Mapped[int] = mapped_column(Integer)
    mean_bits: Mapped[float] = mapped_column(Float)
    max_bits: Mapped[int] = mapped_column(Integer)
    mean_gavg: Mapped[float] = mapped_column(Float)


class Policy(Base):
    """One version of the fleet-wide precision policy (rows are never updated)."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    t_min: Mapped[float] = mapped_column(Float)
    t_max: Mapped[float] = mapped_column(Float)
    bits_min: Mapped[int] = mapped_column(Integer)
    bits_max: Mapped[int] = mapped_column(Integer)
    bits_init: Mapped[int] = mapped_column(Integer)
    check_every: Mapped[int] = mapped_column(Integer)
    rounding: Mapped[str] = mapped_column(String(16))
    act_bits: Mapped[int] = mapped_column(Integer)
    err_bits: Mapped[int] = mapped_column(Integer)
    adaptive: Mapped[bool] = mapped_column(Boolean)
    overrides: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)
    #: Per-device-class resource budgets: ``{"mcu": {"memory_bytes": 150000, "energy_j": 0.004}}``.
    budgets: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)
    author: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Checkpoint(Base):
    """The packed global model at the end of one round."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        _round_fk("checkpoints"),
        UniqueConstraint("run_id", "round", name="uq_checkpoints_run_id_round"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    packed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token; only the SHA-256 hex digest of the secret is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(_in("role", TOKEN_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    #: None: never expires.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Updated at most once a minute per token, so reads do not write every time.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DashboardSession(Base):
    """A signed-in dashboard browser: only the SHA-256 digest of its cookie is stored.

    Bound to the token it signed in with: revoking (or deleting) the token ends it.
    """

    __tablename__ = "dashboard_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsoleAction(Base):
    """One state-changing action, from the console or the API, with who took it (rows never change).

    ``target`` names what it acted on (``run:12``, ``policy:v7``); ``detail`` is a short
    human sentence (the run's settings, the policy note).
    """

    __tablename__ = "console_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
