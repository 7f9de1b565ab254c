"""Key rotation (validity range and provenance of gateway keys) and gateway status.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_keys") as batch:
        batch.add_column(sa.Column("enrolled_by", sa.String(length=16), nullable=False, server_default="operator",
                                   comment="operator (blackbox store enroll) or rotation (a key.rotated event in "
                                           "the chain)."))
        batch.add_column(sa.Column("rotated_from", sa.String(length=128), nullable=True,
                                   comment="Key id that handed over to this key."))
        batch.add_column(sa.Column("valid_from_seq", sa.BigInteger(), nullable=True,
                                   comment="First record seq this key may sign (rotation)."))
        batch.add_column(sa.Column("valid_to_seq", sa.BigInteger(), nullable=True,
                                   comment="Last record seq this key may sign (retired)."))
    with op.batch_alter_table("gateways") as batch:
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=True,
                                   comment="online/offline, from the gateway's status topic."))
        batch.add_column(sa.Column("status_at_us", sa.BigInteger(), nullable=True,
                                   comment="When the status was received."))
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateways") as batch:
        for name in ("status_reason", "status_at_us", "status"):
            batch.drop_column(name)
    with op.batch_alter_table("gateway_keys") as batch:
        for name in ("valid_to_seq", "valid_from_seq", "rotated_from", "enrolled_by"):
            batch.drop_column(name)
