"""Sealed batches can be dropped under the disk quota (dropped_at_us).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sealed_batches", sa.Column("dropped_at_us", sa.BigInteger(), nullable=True))
