"""Create the coordinator tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _round_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id", "round"],
        ["rounds.run_id", "rounds.round"],
        ondelete="CASCADE",
        name=f"fk_{table}_run_id_round_rounds",
    )


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'operator')", name="ck_api_tokens_role"),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.BigInteger(), nullable=False),
        sa.Column("device_class", sa.String(32), nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.CheckConstraint("status IN ('active', 'rejected', 'failed')", name="ck_devices_status"),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("node_id", name="uq_devices_node_id"),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("t_min", sa.Float(), nullable=False),
        sa.Column("t_max", sa.Float(), nullable=False),
        sa.Column("bits_min", sa.Integer(), nullable=False),
        sa.Column("bits_max", sa.Integer(), nullable=False),
        sa.Column("bits_init", sa.Integer(), nullable=False),
        sa.Column("check_every", sa.Integer(), nullable=False),
        sa.Column("rounding", sa.String(16), nullable=False),
        sa.Column("act_bits", sa.Integer(), nullable=False),
        sa.Column("err_bits", sa.Integer(), nullable=False),
        sa.Column("adaptive", sa.Boolean(), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
        sa.UniqueConstraint("version", name="uq_policies_version"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("clients", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(200), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flower_run_id", sa.BigInteger(), nullable=True),
        sa.Column("current_round", sa.Integer(), nullable=False),
        sa.Column("latest_accuracy", sa.Float(), nullable=True),
        sa.Column("savings", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'stopped', 'interrupted')",
            name="ck_runs_status",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("energy_j", sa.Float(), nullable=False),
        sa.Column("uplink_bytes", sa.BigInteger(), nullable=False),
        sa.Column("downlink_bytes", sa.BigInteger(), nullable=False),
        sa.Column("participants", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("rejections", sa.Integer(), nullable=False),
        sa.Column("mean_bits", sa.Float(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("global_bits", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], ondelete="CASCADE", name="fk_rounds_run_id_runs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rounds"),
        sa.UniqueConstraint("run_id", "round", name="uq_rounds_run_id_round"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("packed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        _round_fk("checkpoints"),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
        sa.UniqueConstraint("run_id", "round", name="uq_checkpoints_run_id_round"),
    )
    op.create_table(
        "client_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("partition_id", sa.Integer(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("energy_j", sa.Float(), nullable=False),
        sa.Column("uplink_bytes", sa.BigInteger(), nullable=False),
        sa.Column("downlink_bytes", sa.BigInteger(), nullable=False),
        sa.Column("num_examples", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("param_bytes", sa.BigInteger(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.Text(), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        _round_fk("client_rounds"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            ondelete="CASCADE",
            name="fk_client_rounds_device_id_devices",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_client_rounds"),
        sa.UniqueConstraint(
            "run_id", "round", "device_id", name="uq_client_rounds_run_id_round_device_id"
        ),
    )
    op.create_index("ix_client_rounds_device_id", "client_rounds", ["device_id"])
    op.create_table(
        "layer_precision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("layer", sa.String(200), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("exponent", sa.Integer(), nullable=False),
        sa.Column("gavg", sa.Float(), nullable=False),
        sa.Column("underflow", sa.Float(), nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        _round_fk("layer_precision"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            ondelete="CASCADE",
            name="fk_layer_precision_device_id_devices",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_layer_precision"),
        sa.UniqueConstraint(
            "run_id",
            "round",
            "device_id",
            "layer",
            name="uq_layer_precision_run_id_round_device_id_layer",
        ),
    )
    op.create_index("ix_layer_precision_device_id", "layer_precision", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_layer_precision_device_id", table_name="layer_precision")
    op.drop_table("layer_precision")
    op.drop_index("ix_client_rounds_device_id", table_name="client_rounds")
    op.drop_table("client_rounds")
    op.drop_table("checkpoints")
    op.drop_table("rounds")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_table("runs")
    op.drop_table("policies")
    op.drop_table("devices")
    op.drop_table("api_tokens")
