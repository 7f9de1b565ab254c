"""Readings stored in blocks, one row per commit (reading_blocks; readings becomes a view).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from blackbox.buffer import convert

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    cur = convert.cursor_of(op.get_bind())
    try:
        convert.reading_blocks(cur)
    finally:
        cur.close()
