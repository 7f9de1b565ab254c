"""Readings stored as column chunks: ``readings`` (a row per reading) becomes ``reading_chunks`` (a row
per sealed batch, tag, production batch and phase, the readings' columns packed; see
blackbox.store.chunks). Existing readings are converted in seq order, a sealed batch at a time,
into exactly the chunks ingest would have written, and back on downgrade. On PostgreSQL the new
table is partitioned by month on ``first_ts_us`` (new rows go to its default partition until the
store creates the monthly ones at its next start).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from blackbox.store.chunks import CHUNK_COLUMNS, READING_COLUMNS, decode_tuple, decode_value, explode, make_chunks

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BATCH_ROWS = 20_000
"""Rows read per round trip while converting."""


def _gid() -> sa.types.TypeEngine[Any]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _chunks_table() -> None:
    cols = [
        sa.Column("gateway_id", _gid(), nullable=False, autoincrement=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False, autoincrement=False,
                  comment="Seq of the chunk's first reading."),
        sa.Column("first_ts_us", sa.BigInteger(), nullable=False, autoincrement=False,
                  comment="Earliest reading time in the chunk; the partition key on PostgreSQL (monthly partitions)."),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_ts_us", sa.BigInteger(), nullable=False, comment="Latest reading time in the chunk."),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False, comment="Sealed batch that carried the readings."),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("batch", sa.String(length=128), nullable=True),
        sa.Column("phase", sa.String(length=128), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False, comment="Number of readings in the chunk."),
        sa.Column("seqs", sa.LargeBinary(), nullable=False, comment="int64 little-endian, one per reading, ascending."),
        sa.Column("ts", sa.LargeBinary(), nullable=False, comment="int64 little-endian reading times (us)."),
        sa.Column("kinds", sa.LargeBinary(), nullable=False,
                  comment="One ASCII byte per reading: f(loat) i(nt) b(ool) s(tr) n(ull)."),
        sa.Column("nums", sa.LargeBinary(), nullable=False,
                  comment="float64 little-endian; 0 where the kind has no number."),
        sa.Column("texts", sa.LargeBinary(), nullable=True,
                  comment="JSON list: the text of each int and str value, in order."),
        sa.Column("qualities", sa.LargeBinary(), nullable=False,
                  comment="One ASCII byte per reading: g(ood) u(ncertain) b(ad)."),
        sa.Column("reasons", sa.LargeBinary(), nullable=True,
                  comment="JSON list of each reading's reason; null if none has one."),
        sa.Column("source_ts", sa.LargeBinary(), nullable=True,
                  comment="int64 little-endian source times; null if none."),
        sa.Column("source_mask", sa.LargeBinary(), nullable=True,
                  comment="0/1 per reading with a source time; null if all."),
    ]
    kwargs: dict[str, Any] = {"postgresql_partition_by": "RANGE (first_ts_us)"} if _pg() else {}
    op.create_table("reading_chunks", *cols,
                    sa.PrimaryKeyConstraint("gateway_id", "first_seq", "first_ts_us", name="pk_reading_chunks"),
                    **kwargs)
    if _pg():
        op.execute("CREATE TABLE reading_chunks_default PARTITION OF reading_chunks DEFAULT")
    op.create_index("ix_reading_chunks_batch_tag", "reading_chunks", ["batch", "tag"])
    op.create_index("ix_reading_chunks_tag_first_ts_us", "reading_chunks", ["tag", "first_ts_us"])
    op.create_index("ix_reading_chunks_gateway_id_last_seq", "reading_chunks", ["gateway_id", "last_seq"])


def _readings_table() -> None:
    cols = [
        sa.Column("gateway_id", _gid(), nullable=False, autoincrement=False),
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
    kwargs: dict[str, Any] = {"postgresql_partition_by": "RANGE (ts_us)"} if _pg() else {}
    op.create_table("readings", *cols, sa.PrimaryKeyConstraint("gateway_id", "seq", "ts_us", name="pk_readings"),
                    **kwargs)
    if _pg():
        op.execute("CREATE TABLE readings_default PARTITION OF readings DEFAULT")
    op.create_index("ix_readings_batch_tag", "readings", ["batch", "tag"])
    op.create_index("ix_readings_tag_ts_us", "readings", ["tag", "ts_us"])


def _rows(sql: str) -> Iterator[list[Any]]:
    """Rows of a query, a part at a time (a server-side cursor where the driver has one)."""
    result = op.get_bind().execute(sa.text(sql).execution_options(yield_per=BATCH_ROWS))
    for part in result.partitions():
        yield [tuple(r) for r in part]


def _insert(table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        names = ", ".join(columns)
        marks = ", ".join(f":{c}" for c in columns)
        op.get_bind().execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({marks})"),
                              [dict(zip(columns, r, strict=True)) for r in rows])


def upgrade() -> None:
    _chunks_table()
    key: tuple[int, int] | None = None
    records: list[list[Any]] = []
    out: list[tuple[Any, ...]] = []
    for part in _rows(f"SELECT {', '.join(READING_COLUMNS)} FROM readings ORDER BY gateway_id, batch_seq, seq"):
        for gid, seq, batch_seq, tag, kind, num, text, quality, reason, ts, source, batch, phase in part:
            if (gid, batch_seq) != key:
                if key is not None:
                    out.extend(make_chunks(records, *key))
                key, records = (gid, batch_seq), []
            records.append([seq, tag, decode_value(kind, num, text), quality, reason, ts, source, batch, phase])
        if len(out) >= 1000:
            _insert("reading_chunks", CHUNK_COLUMNS, out)
            out = []
    if key is not None:
        out.extend(make_chunks(records, *key))
    _insert("reading_chunks", CHUNK_COLUMNS, out)
    op.drop_table("readings")  # on PostgreSQL with its partitions


def downgrade() -> None:
    _readings_table()
    for part in _rows(f"SELECT {', '.join(CHUNK_COLUMNS)} FROM reading_chunks ORDER BY gateway_id, first_seq"):
        _insert("readings", READING_COLUMNS, [r for chunk in part for r in explode(decode_tuple(chunk))])
    op.drop_table("reading_chunks")
