"""Store at fleet scale: per-device indexes and the per-round per-layer precision summary.

``(device_id, run_id, round)`` indexes serve one device's rows of a run (``?device=``)
as well as its whole history and the cascades, so they replace the ``device_id`` indexes
(one index fewer to maintain per row written); ``(run_id, round)`` lookups already use the
prefix of the unique keys. The summary table is filled from the existing
``layer_precision`` rows, so old runs keep their summary; ``rounds.devices`` (a round's
per-device rows, summed for a run's count) from the existing ``client_rounds``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = """
INSERT INTO precision_summaries
    (run_id, round, layer, devices, min_bits, mean_bits, max_bits, mean_gavg)
SELECT run_id, round, layer, COUNT(DISTINCT device_id), MIN(bits),
       AVG(CAST(bits AS FLOAT)), MAX(bits), AVG(gavg)
FROM layer_precision
GROUP BY run_id, round, layer
"""


_DEVICES_BACKFILL = """
UPDATE rounds SET devices = (
    SELECT COUNT(*) FROM client_rounds
    WHERE client_rounds.run_id = rounds.run_id AND client_rounds.round = rounds.round
)
"""


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("devices", sa.Integer(), nullable=False, server_default="0"))
    op.execute(_DEVICES_BACKFILL)
    op.create_index(
        "ix_client_rounds_device_id_run_id_round",
        "client_rounds",
        ["device_id", "run_id", "round"],
    )
    op.drop_index("ix_client_rounds_device_id", table_name="client_rounds")
    op.create_index(
        "ix_layer_precision_device_id_run_id_round_layer",
        "layer_precision",
        ["device_id", "run_id", "round", "layer"],
    )
    op.drop_index("ix_layer_precision_device_id", table_name="layer_precision")
    op.create_table(
        "precision_summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("layer", sa.String(200), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("min_bits", sa.Integer(), nullable=False),
        sa.Column("mean_bits", sa.Float(), nullable=False),
        sa.Column("max_bits", sa.Integer(), nullable=False),
        sa.Column("mean_gavg", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "round"],
            ["rounds.run_id", "rounds.round"],
            ondelete="CASCADE",
            name="fk_precision_summaries_run_id_round_rounds",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_precision_summaries"),
        sa.UniqueConstraint(
            "run_id", "round", "layer", name="uq_precision_summaries_run_id_round_layer"
        ),
    )
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_table("precision_summaries")
    op.create_index("ix_layer_precision_device_id", "layer_precision", ["device_id"])
    op.drop_index("ix_layer_precision_device_id_run_id_round_layer", table_name="layer_precision")
    op.create_index("ix_client_rounds_device_id", "client_rounds", ["device_id"])
    op.drop_index("ix_client_rounds_device_id_run_id_round", table_name="client_rounds")
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("devices")
