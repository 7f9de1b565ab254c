"""Joint control: approver keys per site, every specification version received, two-party actions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "approver_keys",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False,
                  comment="qa (the factory's quality assurance) or regulator."),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("enrolled_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approver_keys")),
        sa.UniqueConstraint("site", "key_id", name=op.f("uq_approver_keys_site_key_id")),
    )
    op.create_table(
        "specifications",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("spec_id", sa.String(length=128), nullable=False),
        sa.Column("product", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False, comment="Canonical hash of the document."),
        sa.Column("document", Json, nullable=False),
        sa.Column("signatures", Json, nullable=False, comment="The sidecar signature file, as received."),
        sa.Column("status", sa.String(length=16), nullable=False, comment="approved or refused, when it was received."),
        sa.Column("detail", sa.Text(), nullable=True, comment="Why it was refused."),
        sa.Column("received_at_us", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False,
                  comment="gateway site/id (spec.applied) or operator."),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_specifications")),
        sa.UniqueConstraint("site", "sha256", name=op.f("uq_specifications_site_sha256")),
    )
    op.create_index(op.f("ix_specifications_site_spec_id_version"), "specifications", ["site", "spec_id", "version"])
    op.create_table(
        "joint_actions",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False, comment="reenroll, revoke or purge."),
        sa.Column("site", sa.String(length=128), nullable=True),
        sa.Column("gateway", sa.String(length=128), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True, comment="Canonical hash of the action document."),
        sa.Column("document", Json, nullable=True),
        sa.Column("signatures", Json, nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False, comment="done or refused."),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=True, comment="OS account that ran the command."),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_joint_actions")),
    )
    op.create_index(op.f("ix_joint_actions_site_at_us"), "joint_actions", ["site", "at_us"])


def downgrade() -> None:
    op.drop_index(op.f("ix_joint_actions_site_at_us"), "joint_actions")
    op.drop_table("joint_actions")
    op.drop_index(op.f("ix_specifications_site_spec_id_version"), "specifications")
    op.drop_table("specifications")
    op.drop_table("approver_keys")
