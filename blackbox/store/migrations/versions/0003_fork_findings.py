"""Fork detection: look-ups of a gateway's batches by hash and by predecessor, and the other batch
of a conflict in ``rejections``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sealed_batches_gateway_id_hash", "sealed_batches", ["gateway_id", "hash"])
    op.create_index("ix_sealed_batches_gateway_id_prev_hash", "sealed_batches", ["gateway_id", "prev_hash"])
    with op.batch_alter_table("rejections") as batch:
        batch.add_column(sa.Column("conflict_batch_seq", sa.BigInteger(), nullable=True,
                                   comment="The stored batch this one conflicts with (fork, chain_broken, "
                                           "replay), if any."))
        batch.add_column(sa.Column("conflict_hash", sa.String(length=64), nullable=True,
                                   comment="Hash of that stored batch."))


def downgrade() -> None:
    with op.batch_alter_table("rejections") as batch:
        batch.drop_column("conflict_hash")
        batch.drop_column("conflict_batch_seq")
    op.drop_index("ix_sealed_batches_gateway_id_prev_hash", "sealed_batches")
    op.drop_index("ix_sealed_batches_gateway_id_hash", "sealed_batches")
