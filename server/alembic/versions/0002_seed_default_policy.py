"""Seed precision policy version 1 with the PrecisionPolicy() defaults.

The values are frozen here on purpose: a migration must not change meaning when
apt_core's defaults change later. tests/server/test_migrations.py checks that they
still equal ``apt_core.config.PrecisionPolicy()``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_policies = sa.table(
    "policies",
    sa.column("version", sa.Integer()),
    sa.column("t_min", sa.Float()),
    sa.column("t_max", sa.Float()),
    sa.column("bits_min", sa.Integer()),
    sa.column("bits_max", sa.Integer()),
    sa.column("bits_init", sa.Integer()),
    sa.column("check_every", sa.Integer()),
    sa.column("rounding", sa.String()),
    sa.column("act_bits", sa.Integer()),
    sa.column("err_bits", sa.Integer()),
    sa.column("adaptive", sa.Boolean()),
    sa.column("overrides", sa.JSON()),
    sa.column("author", sa.String()),
    sa.column("note", sa.Text()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.bulk_insert(_policies, [{
        "version": 1, "t_min": 0.5, "t_max": 2.0, "bits_min": 4, "bits_max": 16,
        "bits_init": 8, "check_every": 50, "rounding": "nearest", "act_bits": 8,
        "err_bits": 8, "adaptive": True, "overrides": {}, "author": "system",
        "note": "Seeded default policy (PrecisionPolicy() defaults).",
        "created_at": datetime.now(UTC),
    }])


def downgrade() -> None:
    op.execute(_policies.delete().where(_policies.c.version == 1))
