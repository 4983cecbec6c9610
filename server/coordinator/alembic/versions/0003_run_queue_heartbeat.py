"""Runs can wait in an admission queue; jobs write a heartbeat and count start attempts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "status IN ('pending', 'running', 'completed', 'failed', 'stopped', 'interrupted')"
_NEW = "status IN ('queued', 'pending', 'running', 'completed', 'failed', 'stopped', 'interrupted')"

#: 0001 named its check through the naming convention twice; 0003 fixes the name too
_NAME_0001 = "ck_runs_ck_runs_status"
_NAME = "ck_runs_status"


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table, other databases alter it in place
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f(_NAME_0001), type_="check")
        batch.create_check_constraint(op.f(_NAME), _NEW)
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("start_attempts", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    # a queued run never started: it becomes a stopped one, which can be resumed
    op.execute("UPDATE runs SET status = 'stopped' WHERE status = 'queued'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("start_attempts")
        batch.drop_column("heartbeat_at")
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME_0001), _OLD)
