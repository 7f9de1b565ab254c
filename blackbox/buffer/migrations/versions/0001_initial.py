"""The buffer as agent version 1 made it: readings one per row, events, sealed batches, meta.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "readings",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("quality", sa.String(length=9), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source_ts_us", sa.BigInteger(), nullable=True),
        sa.Column("batch", sa.String(), nullable=True),
        sa.Column("phase", sa.String(), nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("batch", sa.String(), nullable=True),
        sa.Column("phase", sa.String(), nullable=True),
    )
    op.create_table(
        "sealed_batches",
        sa.Column("batch_seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("wire", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_at_us", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at_us", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
