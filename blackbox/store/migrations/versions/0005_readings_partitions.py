"""Readings partitioned by time on PostgreSQL (monthly, by ts_us, with a default partition); the
primary key includes ts_us (PostgreSQL requires the partition key in it); index (tag, ts_us).

SQLite keeps a plain table with the same key and indexes. Existing readings are copied into the new
table (on PostgreSQL into its default partition, which the store splits into monthly partitions at
its next start: see blackbox.store.partitions).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = "gateway_id, seq, batch_seq, tag, kind, num, text, quality, reason, ts_us, source_ts_us, batch, phase"


def _columns() -> list[sa.Column[object]]:
    gid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return [
        sa.Column("gateway_id", gid, nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False, comment="Sealed batch that carried it."),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="float, int, bool, str or null"),
        sa.Column("num", sa.Double(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ts_us", sa.BigInteger(), nullable=False, autoincrement=False,
                  comment="Reading time; the partition key on PostgreSQL (monthly partitions)."),
        sa.Column("source_ts_us", sa.BigInteger(), nullable=True),
        sa.Column("batch", sa.String(length=128), nullable=True),
        sa.Column("phase", sa.String(length=128), nullable=True),
    ]


def _rebuild(pk: list[str], partitioned: bool, indexes: dict[str, list[str]], old_indexes: list[str]) -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for name in old_indexes:
        op.drop_index(name, table_name="readings")
    op.rename_table("readings", "readings_old")
    if pg:
        op.execute("ALTER TABLE readings_old RENAME CONSTRAINT pk_readings TO pk_readings_old")
    kwargs: dict[str, Any] = {"postgresql_partition_by": "RANGE (ts_us)"} if partitioned and pg else {}
    op.create_table("readings", *_columns(), sa.PrimaryKeyConstraint(*pk, name="pk_readings"), **kwargs)
    if partitioned and pg:
        op.execute("CREATE TABLE readings_default PARTITION OF readings DEFAULT")
    op.execute(f"INSERT INTO readings ({COLUMNS}) SELECT {COLUMNS} FROM readings_old")
    op.drop_table("readings_old")
    for name, columns in indexes.items():
        op.create_index(name, "readings", columns)


def upgrade() -> None:
    _rebuild(["gateway_id", "seq", "ts_us"], True,
             {"ix_readings_batch_tag": ["batch", "tag"], "ix_readings_tag_ts_us": ["tag", "ts_us"]},
             ["ix_readings_batch_tag"])


def downgrade() -> None:
    _rebuild(["gateway_id", "seq"], False, {"ix_readings_batch_tag": ["batch", "tag"]},
             ["ix_readings_batch_tag", "ix_readings_tag_ts_us"])
