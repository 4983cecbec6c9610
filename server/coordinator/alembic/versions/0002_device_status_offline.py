"""Devices can be offline (no heartbeat or no reply), distinct from failed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "status IN ('active', 'rejected', 'failed')"
_NEW = "status IN ('active', 'rejected', 'failed', 'offline')"


#: 0001 named its check through the naming convention twice; 0002 fixes the name too
_NAME_0001 = "ck_devices_ck_devices_status"
_NAME = "ck_devices_status"


def _replace_status_check(check: str, old_name: str, new_name: str) -> None:
    # batch mode: SQLite rebuilds the table, other databases alter it in place
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint(op.f(old_name), type_="check")
        batch.create_check_constraint(op.f(new_name), check)


def upgrade() -> None:
    _replace_status_check(_NEW, _NAME_0001, _NAME)


def downgrade() -> None:
    op.execute("UPDATE devices SET status = 'failed' WHERE status = 'offline'")
    _replace_status_check(_OLD, _NAME, _NAME_0001)
