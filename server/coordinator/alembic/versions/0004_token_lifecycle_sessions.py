"""Token lifecycle (expiry, last use, revocation time) and server-side dashboard sessions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_TOKEN_COLUMNS = ("expires_at", "last_used_at", "revoked_at")


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table, other databases alter it in place
    with op.batch_alter_table("api_tokens") as batch:
        for column in _TOKEN_COLUMNS:
            batch.add_column(sa.Column(column, _TS, nullable=True))
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            ondelete="CASCADE",
            name="fk_dashboard_sessions_token_id_api_tokens",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dashboard_sessions"),
        sa.UniqueConstraint("session_hash", name="uq_dashboard_sessions_session_hash"),
    )
    op.create_index("ix_dashboard_sessions_token_id", "dashboard_sessions", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_sessions_token_id", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    with op.batch_alter_table("api_tokens") as batch:
        for column in reversed(_TOKEN_COLUMNS):
            batch.drop_column(column)
