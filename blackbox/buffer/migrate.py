"""Schema revisions of the buffer: create a new one, or bring an older agent's buffer up to date.

An upgraded agent must open the buffer its predecessor left behind: that buffer may hold data the
store has not acknowledged yet. The buffer's versions are Alembic revisions, like the store's
(``blackbox/buffer/migrations/versions``; :mod:`blackbox.buffer.upgrade` runs them). The agent
opens its buffer on every start, and importing Alembic costs about 130 ms of CPU, so the check
here reads ``alembic_version`` with plain SQL and imports Alembic only when the buffer is not at
:data:`~blackbox.buffer.schema.SCHEMA_REVISION`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine

from blackbox.buffer.schema import SCHEMA_REVISION


class BufferVersionError(Exception):
    """The buffer cannot be opened by this agent (written by a newer one, unrecognisable, or its upgrade failed)."""


def prepare(engine: Engine, path: Path) -> list[str]:
    """Create the schema in an empty file or upgrade an old one; return the revisions applied."""
    if _revision(engine) == SCHEMA_REVISION:
        return []
    from blackbox.buffer.upgrade import upgrade  # Alembic: only when there is something to do

    return upgrade(engine, path)


def _revision(engine: Engine) -> str | None:
    """The buffer's Alembic revision, ``None`` if it has none (new, or made before the buffer used Alembic)."""
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        if not isinstance(dbapi, sqlite3.Connection):
            raise RuntimeError(f"the buffer is SQLite, not {type(dbapi).__name__}")
        found = dbapi.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone()
        row = None if found is None else dbapi.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])
    finally:
        raw.close()
