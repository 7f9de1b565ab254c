"""Event data kept exactly on PostgreSQL: ``events.data`` and ``tag_configs.data`` become ``json``
(text as written) instead of ``jsonb``, which rewrote numbers (1e16 read back as an integer, -0.0
as 0.0). Values stored before this revision keep jsonb's rewriting; the signed bytes in
``sealed_batches.wire`` hold the originals. SQLite stores JSON as text already: nothing to do.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = (("events", "data"), ("tag_configs", "data"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.JSON(), existing_type=postgresql.JSONB(),
                        postgresql_using=f"{column}::json")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=postgresql.JSONB(), existing_type=sa.JSON(),
                        postgresql_using=f"{column}::jsonb")
