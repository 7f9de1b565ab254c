"""The rules' state is saved as one row per rule, only the changed ones per commit (rule_state).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from blackbox.buffer import convert

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_state",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
    )
    cur = convert.cursor_of(op.get_bind())
    try:
        convert.rule_state(cur)
    finally:
        cur.close()
