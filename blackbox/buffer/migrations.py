"""Schema versions of the buffer: create a new one, or bring an older agent's buffer up to date.

An upgraded agent must open the buffer its predecessor left behind: that buffer may hold data the
store has not acknowledged yet. Each migration takes a buffer from version ``n - 1`` to ``n``;
all of them and the new version number are committed in one transaction, so a crash half-way
leaves the old buffer exactly as it was. A buffer of a *newer* agent is refused, never touched.

Python's ``sqlite3`` runs DDL outside any transaction unless told otherwise, so this module
drives the transaction itself (``BEGIN IMMEDIATE`` … ``COMMIT``) on the DBAPI connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.schema import CreateTable

from blackbox.buffer.schema import SCHEMA_VERSION, metadata

Migration = Callable[[sqlite3.Cursor], None]


class BufferVersionError(Exception):
    """The buffer cannot be opened by this agent (written by a newer one, or unrecognisable)."""


def _v2_droppable_batches(cur: sqlite3.Cursor) -> None:
    cur.execute("ALTER TABLE sealed_batches ADD COLUMN dropped_at_us BIGINT")


MIGRATIONS: dict[int, tuple[str, Migration]] = {
    2: ("sealed batches can be dropped under the disk quota (dropped_at_us)", _v2_droppable_batches),
}
"""Target version -> (what changes, how)."""


def prepare(engine: Engine, path: Path) -> list[int]:
    """Create the schema in an empty file or migrate an old one; return the versions applied."""
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        assert isinstance(dbapi, sqlite3.Connection)
        saved_isolation = dbapi.isolation_level
        dbapi.isolation_level = None  # explicit BEGIN/COMMIT below, DDL included
        cur = dbapi.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                applied = _prepare(cur, engine, path)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return applied
        finally:
            cur.close()
            dbapi.isolation_level = saved_isolation
    finally:
        raw.close()


def _prepare(cur: sqlite3.Cursor, engine: Engine, path: Path) -> list[int]:
    found = _version(cur)
    if found is None:
        # A new file; or one whose creation by a version-1 agent was interrupted (tables, no data).
        for name in _tables(cur):
            if cur.execute(f'SELECT EXISTS (SELECT 1 FROM "{name}")').fetchone()[0]:
                raise BufferVersionError(f"{path} holds data but no schema version: it was not written by "
                                         "blackbox, or was damaged; move it aside and keep it for analysis")
            cur.execute(f'DROP TABLE "{name}"')
        for table in metadata.sorted_tables:
            cur.execute(str(CreateTable(table).compile(dialect=engine.dialect)))
        _set_version(cur, SCHEMA_VERSION)
        return []
    if found > SCHEMA_VERSION:
        raise BufferVersionError(f"{path} was written by a newer agent (schema {found}, this agent knows "
                                 f"{SCHEMA_VERSION}); upgrade the agent, do not delete the buffer")
    applied = []
    for version in range(found + 1, SCHEMA_VERSION + 1):
        what, migrate = MIGRATIONS[version]
        try:
            migrate(cur)
        except sqlite3.Error as exc:
            raise BufferVersionError(f"cannot upgrade {path} from schema {version - 1} to {version} ({what}): "
                                     f"{exc}; the buffer is left as it was") from exc
        applied.append(version)
    if applied:
        _set_version(cur, SCHEMA_VERSION)
    return applied


def _tables(cur: sqlite3.Cursor) -> set[str]:
    return {name for (name,) in cur.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name NOT LIKE 'sqlite_%'")}


def _version(cur: sqlite3.Cursor) -> int | None:
    if "meta" not in _tables(cur):
        return None
    row = cur.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return None if row is None else int(row[0])


def _set_version(cur: sqlite3.Cursor, version: int) -> None:
    cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(version),))
