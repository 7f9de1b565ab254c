"""The web window: users, API tokens, sessions and the access log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False, comment="argon2id (argon2-cffi), never the password."),
        sa.Column("role", sa.String(16), nullable=False, comment="regulator, factory_qa or admin."),
        sa.Column("sites", Json, nullable=True,
                  comment="Sites the user may see; null: every site (regulator only)."),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("disabled_at_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_users"),
        sa.UniqueConstraint("username", name="uq_web_users_username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("token_id", sa.String(32), nullable=False, comment="Public part of the token (shown in lists)."),
        sa.Column("secret_sha256", sa.String(64), nullable=False,
                  comment="SHA-256 of the secret part; the secret is shown once."),
        sa.Column("name", sa.String(128), nullable=False, comment="Who holds it (person or system)."),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("sites", Json, nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_id", name="uq_api_tokens_token_id"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("session_sha256", sa.String(64), nullable=False, comment="SHA-256 of the cookie value."),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False, comment="Token every form of the session must carry."),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_sessions"),
        sa.ForeignKeyConstraint(["user_id"], ["web_users.id"], name="fk_web_sessions_user_id_web_users"),
        sa.UniqueConstraint("session_sha256", name="uq_web_sessions_session_sha256"),
    )
    op.create_table(
        "access_log",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False, comment="user:<name> or token:<id> (<name>)."),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False,
                  comment="What was read, e.g. batch.report, batch.series."),
        sa.Column("site", sa.String(128), nullable=True),
        sa.Column("batch", sa.String(128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("client", sa.String(64), nullable=True, comment="Client address as seen by the web process."),
        sa.PrimaryKeyConstraint("id", name="pk_access_log"),
    )
    op.create_index("ix_access_log_site_batch", "access_log", ["site", "batch"])
    op.create_index("ix_access_log_at_us", "access_log", ["at_us"])


def downgrade() -> None:
    op.drop_index("ix_access_log_at_us", table_name="access_log")
    op.drop_index("ix_access_log_site_batch", table_name="access_log")
    for table in ("access_log", "web_sessions", "api_tokens", "web_users"):
        op.drop_table(table)
