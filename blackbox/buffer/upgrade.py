"""Run the buffer's Alembic revisions, all of them and the new revision in one SQLite transaction.

A kill -9 or a failing step half-way leaves the old buffer exactly as it was: the upgrade's
connection begins with ``BEGIN IMMEDIATE`` (:func:`blackbox.sqlite.transactional_ddl`), Alembic
runs inside that transaction (``transactional_ddl=True``, ``transaction_per_migration=False`` in
``migrations/env.py``) and it is committed once, after the last revision and the
``alembic_version`` update. A buffer of a *newer* agent is refused, never touched.

Buffers made before the buffer used Alembic carry their version ``N`` (1 to 5) in the ``meta``
table (``schema_version``): in the same transaction they are stamped with revision ``000N`` and
that row is removed, then upgraded like any other.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from blackbox.buffer.migrate import BufferVersionError
from blackbox.buffer.schema import SCHEMA_REVISION
from blackbox.sqlite import transactional_ddl

MIGRATIONS = Path(__file__).with_name("migrations")

LAST_META_VERSION = 5
"""The last ``meta.schema_version`` written before the buffer used Alembic: version N is revision ``000N``."""


def alembic_config(conn: Connection, applied: list[str]) -> Config:
    """An Alembic configuration that runs on ``conn`` and appends each revision applied to ``applied``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    cfg.attributes["applied"] = applied
    return cfg


def upgrade(engine: Engine, path: Path) -> list[str]:
    """Bring the buffer at ``path`` to the head revision in one transaction; return the revisions applied."""
    applied: list[str] = []
    with engine.connect() as conn, transactional_ddl(conn), conn.begin():
        cfg = alembic_config(conn, applied)
        script = ScriptDirectory.from_config(cfg)
        start, from_meta = _start(conn, path, script)
        try:
            if start is not None and from_meta:
                command.stamp(cfg, start)
                conn.exec_driver_sql("DELETE FROM meta WHERE key='schema_version'")
            command.upgrade(cfg, "head")
        except (sqlite3.Error, DBAPIError, ValueError) as exc:
            failed = _after(script, applied[-1] if applied else start)
            raise BufferVersionError(f"cannot upgrade {path} from schema revision {failed.down_revision} to "
                                     f"{failed.revision} ({failed.doc}): {exc}; the buffer is left as it was") from exc
    return applied


def _start(conn: Connection, path: Path, script: ScriptDirectory) -> tuple[str | None, bool]:
    """The revision the buffer is at (``None``: none, it is new), and whether it is the ``meta`` table's."""
    tables = {name for (name,) in conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}
    if "alembic_version" in tables:
        revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        if revision is not None:
            if revision not in {r.revision for r in script.walk_revisions()}:
                raise _newer(path, revision)
            return str(revision), False
    if "meta" in tables:
        version = conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").scalar()
        if version is not None:
            if int(version) > LAST_META_VERSION:
                raise _newer(path, f"version {version}")
            return f"{int(version):04d}", True
    # A new file; or one whose creation by a version-1 agent was interrupted (tables, no data).
    for name in tables:
        if conn.exec_driver_sql(f'SELECT EXISTS (SELECT 1 FROM "{name}")').scalar():
            raise BufferVersionError(f"{path} holds data but no schema version: it was not written by "
                                     "blackbox, or was damaged; move it aside and keep it for analysis")
        conn.exec_driver_sql(f'DROP TABLE "{name}"')
    return None, False


def _newer(path: Path, found: str) -> BufferVersionError:
    return BufferVersionError(f"{path} was written by a newer agent (schema {found}, this agent knows up to "
                              f"revision {SCHEMA_REVISION}); upgrade the agent, do not delete the buffer")


def _after(script: ScriptDirectory, revision: str | None) -> Script:
    """The revision that follows ``revision`` (the first one after ``None``)."""
    for candidate in script.walk_revisions():
        if candidate.down_revision == revision:
            return candidate
    raise RuntimeError(f"internal error: no buffer revision follows {revision}")
