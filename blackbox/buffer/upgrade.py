"""Run the buffer's Alembic revisions, all of them and the new revision in one SQLite transaction.

A kill -9 or a failing step half-way leaves the old buffer exactly as it was: the upgrade's
connection begins with ``BEGIN IMMEDIATE`` (:func:`transactional_ddl`), Alembic
runs inside that transaction (``transactional_ddl=True``, ``transaction_per_migration=False`` in
``migrations/env.py``) and it is committed once, after the last revision and the
``alembic_version`` update. A buffer of a *newer* agent is refused, never touched.

Buffers made before the buffer used Alembic carry their version ``N`` (1 to 5) in the ``meta``
table (``schema_version``): in the same transaction they are stamped with revision ``000N`` and
that row is removed, then upgraded like any other.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError

from blackbox.buffer.head_schema import SCHEMA_REVISION
from blackbox.buffer.migrate import BufferVersionError
from blackbox.buffer.schema import open_engine

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


def upgrade(path: Path, synchronous: str, quota_bytes: int | None) -> list[str]:
    """Bring the buffer at ``path`` to the head revision in one transaction; return the revisions applied."""
    engine = open_engine(path, synchronous, quota_bytes)
    try:
        with engine.connect() as conn:
            return _upgrade(conn, path)
    finally:
        engine.dispose()


def _upgrade(conn: Connection, path: Path) -> list[str]:
    applied: list[str] = []
    with transactional_ddl(conn), conn.begin():
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


@contextmanager
def transactional_ddl(conn: Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[Connection]:
    """While open, ``conn.begin()`` really opens a transaction on SQLite, DDL included.

    SQLAlchemy's documented recipe for pysqlite (its SQLite dialect docs, "Serializable isolation /
    Savepoints / Transactional DDL"): the driver is told to begin nothing itself (``isolation_level
    = None``), and each begin of ``conn`` emits ``begin``. Python's ``sqlite3`` otherwise opens a
    transaction only before ``INSERT``/``UPDATE``/``DELETE``, so ``CREATE``/``ALTER`` would be
    committed one by one. ``BEGIN IMMEDIATE`` takes the write lock at once. The driver's setting is
    restored on exit (the connection goes back to its pool).
    """
    dbapi = conn.connection.driver_connection
    if not isinstance(dbapi, sqlite3.Connection):
        raise TypeError(f"transactional_ddl needs a sqlite3 connection, not {type(dbapi).__name__}")
    saved = dbapi.isolation_level
    dbapi.isolation_level = None

    def _begin(c: Connection) -> None:
        c.exec_driver_sql(begin)

    event.listen(conn, "begin", _begin)
    try:
        yield conn
    finally:
        event.remove(conn, "begin", _begin)
        dbapi.isolation_level = saved


def head_schema_source() -> str:
    """The text of :mod:`blackbox.buffer.head_schema`: what the revisions make of an empty file, as SQLite stores it.

    ``python -c "from blackbox.buffer.upgrade import head_schema_source as s; print(s(), end='')" >
    blackbox/buffer/head_schema.py`` after adding a revision.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "head.sqlite"
        revision = upgrade(path, "FULL", None)[-1]
        with closing(sqlite3.connect(path)) as db:
            statements = [sql for (sql,) in db.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                                                       "ORDER BY rowid")]
    lines = "".join(f"    {sql!r},\n" for sql in statements)
    return (f'{HEAD_SCHEMA_DOC}\n\n# ruff: noqa: E501\n\nSCHEMA_REVISION = {revision!r}\n'
            f'"""The head of the buffer\'s Alembic revisions."""\n\nSTATEMENTS = (\n{lines})\n')


HEAD_SCHEMA_DOC = '''"""The buffer's schema at its head revision, as SQLite stores it (generated: do not edit).

A new buffer is made from these statements (:mod:`blackbox.buffer.migrate`), without importing
Alembic. Made by :func:`blackbox.buffer.upgrade.head_schema_source`, which runs every revision on an
empty file; the tests fail when this file differs from what it makes.
"""'''


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
