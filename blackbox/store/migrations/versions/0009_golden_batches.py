"""Golden batches: which batch occurrence factory QA (or an administrator) chose as the reference
of a product at a site, by whom and when; a new choice adds a row, so replaced ones stay as history.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "golden_batches",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("batch", sa.String(128), nullable=True,
                  comment="Null: the choice was withdrawn (compare with the last batches)."),
        sa.Column("occurrence", sa.Integer(), nullable=True, comment="Which run of a reused batch number (1, 2, ...)."),
        sa.Column("started_at_us", sa.BigInteger(), nullable=True,
                  comment="Start of the chosen occurrence: pins the run even if the number was reused."),
        sa.Column("chosen_at_us", sa.BigInteger(), nullable=False),
        sa.Column("chosen_by", sa.String(128), nullable=False,
                  comment="user:<name>, token:<id> (<name>) or cli:<OS account>."),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_golden_batches"),
    )
    op.create_index(op.f("ix_golden_batches_site_product_id"), "golden_batches", ["site", "product", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_golden_batches_site_product_id"), "golden_batches")
    op.drop_table("golden_batches")
