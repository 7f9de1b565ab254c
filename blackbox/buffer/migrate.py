"""Schema revisions of the buffer: create a new one, or bring an older agent's buffer up to date.

An upgraded agent must open the buffer its predecessor left behind: that buffer may hold data the
store has not acknowledged yet. The buffer's versions are Alembic revisions, like the store's
(``blackbox/buffer/migrations/versions``; :mod:`blackbox.buffer.upgrade` runs them).

The agent opens its buffer on every start, and importing Alembic and SQLAlchemy costs about 130 ms
of CPU and, for as long as the agent runs, about 25 MiB of memory. So the check here reads
``alembic_version`` with plain SQL, and a new (empty) file is given the head revision's schema as
SQLite stores it (:mod:`blackbox.buffer.head_schema`, generated from the revisions and checked
against them by the tests). Alembic is imported only to upgrade an older agent's buffer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from blackbox.buffer.database import transaction
from blackbox.buffer.head_schema import SCHEMA_REVISION, STATEMENTS


class BufferVersionError(Exception):
    """The buffer cannot be opened by this agent (written by a newer one, unrecognisable, or its upgrade failed)."""


def prepare(conn: sqlite3.Connection, path: Path, synchronous: str, quota_bytes: int | None) -> list[str]:
    """Create the schema in an empty file or upgrade an old one; return the revisions applied.

    ``conn`` is the buffer's own connection, used to read the revision; an upgrade runs on a
    connection of its own with the same settings (``synchronous``, ``quota_bytes``).
    """
    if _revision(conn) == SCHEMA_REVISION or _create_head(conn):
        return []
    from blackbox.buffer.upgrade import upgrade  # Alembic: only when there is something to do

    return upgrade(path, synchronous, quota_bytes)


def _create_head(conn: sqlite3.Connection) -> bool:
    """Give an empty file the head revision's schema, in one transaction; ``False`` if it is not empty."""
    # IMMEDIATE: a second agent on the same new file waits, then finds it made
    with transaction(conn, "BEGIN IMMEDIATE") as cur:
        if cur.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            return False
        for statement in STATEMENTS:
            cur.execute(statement)
        cur.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_REVISION,))
    return True


def _revision(conn: sqlite3.Connection) -> str | None:
    """The buffer's Alembic revision, ``None`` if it has none (new, or made before the buffer used Alembic)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone()
    row = None if found is None else conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])
