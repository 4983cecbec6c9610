"""Device-class budgets on policy versions and the bit cap each client row was sent.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table, other databases alter it in place
    with op.batch_alter_table("policies") as batch:
        batch.add_column(
            sa.Column("budgets", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("client_rounds") as batch:
        batch.add_column(sa.Column("bits_cap", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("client_rounds") as batch:
        batch.drop_column("bits_cap")
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("budgets")
