"""Initial schema of the traceability store (equivalent to blackbox/store/schema.py at 0.1).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Types are spelled out here (not imported from schema.py) so that this revision never changes
# when the schema module moves on.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("gateway", sa.String(length=128), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("last_batch_at_us", sa.BigInteger(), nullable=True, comment="Last time a verified batch came in."),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
        sa.UniqueConstraint("site", "gateway", name=op.f("uq_gateways_site_gateway")),
    )
    op.create_table(
        "gateway_keys",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("gateway_id", Id, nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("enrolled_at_us", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], name=op.f("fk_gateway_keys_gateway_id_gateways")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_keys")),
        sa.UniqueConstraint("gateway_id", "key_id", name=op.f("uq_gateway_keys_gateway_id_key_id")),
    )
    op.create_table(
        "sealed_batches",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("gateway_id", Id, nullable=False),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("header", Json, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_ts_us", sa.BigInteger(), nullable=False),
        sa.Column("last_ts_us", sa.BigInteger(), nullable=False),
        sa.Column("n_readings", sa.Integer(), nullable=False),
        sa.Column("n_events", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=128), nullable=False),
        sa.Column("clock", sa.String(length=32), nullable=False),
        sa.Column("sealed_at_us", sa.BigInteger(), nullable=False),
        sa.Column("received_at_us", sa.BigInteger(), nullable=False),
        sa.Column("wire", sa.LargeBinary(), nullable=False, comment="Exact bytes received, for re-verification."),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], name=op.f("fk_sealed_batches_gateway_id_gateways")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sealed_batches")),
        sa.UniqueConstraint("gateway_id", "batch_seq", name=op.f("uq_sealed_batches_gateway_id_batch_seq")),
    )
    op.create_table(
        "readings",
        sa.Column("gateway_id", Id, autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False, comment="Sealed batch that carried it."),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False, comment="float, int, bool, str or null"),
        sa.Column("num", sa.Double(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("source_ts_us", sa.BigInteger(), nullable=True),
        sa.Column("batch", sa.String(length=128), nullable=True),
        sa.Column("phase", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("gateway_id", "seq", name=op.f("pk_readings")),
    )
    op.create_index(op.f("ix_readings_batch_tag"), "readings", ["batch", "tag"], unique=False)
    op.create_table(
        "events",
        sa.Column("gateway_id", Id, autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("batch", sa.String(length=128), nullable=True),
        sa.Column("phase", sa.String(length=128), nullable=True),
        sa.Column(
            "ref",
            sa.String(length=128),
            nullable=True,
            comment="Lookup key from data: the supplier lot of material.consumed, the batch of batch.* events.",
        ),
        sa.PrimaryKeyConstraint("gateway_id", "seq", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_batch_type"), "events", ["batch", "type"], unique=False)
    op.create_index(op.f("ix_events_ref_type"), "events", ["ref", "type"], unique=False)
    op.create_table(
        "rejections",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("received_at_us", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=True),
        sa.Column("site", sa.String(length=128), nullable=True, comment="As claimed by the topic."),
        sa.Column("gateway", sa.String(length=128), nullable=True, comment="As claimed by the topic."),
        sa.Column(
            "batch_seq", sa.BigInteger(), nullable=True, comment="As claimed by the header, if it could be read."
        ),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        sa.Column("raw_size", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False, comment="The bytes received, capped."),
        sa.Column("raw_truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejections")),
    )
    op.create_index(op.f("ix_rejections_gateway_reason"), "rejections", ["gateway", "reason"], unique=False)
    op.create_index(op.f("ix_rejections_received_at_us"), "rejections", ["received_at_us"], unique=False)
    op.create_table(
        "tag_configs",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("gateway_id", Id, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, comment="Seq of the config.applied event."),
        sa.Column("config_sha256", sa.String(length=128), nullable=False),
        sa.Column("effective_from_us", sa.BigInteger(), nullable=False),
        sa.Column("data", Json, nullable=False, comment="The config.applied event data: site, gateway, tags, limits."),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.id"], name=op.f("fk_tag_configs_gateway_id_gateways")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_configs")),
        sa.UniqueConstraint("gateway_id", "seq", name=op.f("uq_tag_configs_gateway_id_seq")),
    )
    op.create_index(
        op.f("ix_tag_configs_gateway_id_effective_from_us"),
        "tag_configs",
        ["gateway_id", "effective_from_us"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("tag_configs")
    op.drop_table("rejections")
    op.drop_table("events")
    op.drop_table("readings")
    op.drop_table("sealed_batches")
    op.drop_table("gateway_keys")
    op.drop_table("gateways")
