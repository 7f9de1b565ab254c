"""Engine construction for the store: SQLite pragmas on every connection, PostgreSQL as is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def make_engine(url: str, *, synchronous: str = "FULL", **kwargs: Any) -> Engine:
    """An engine for ``url``; for SQLite files: WAL, ``synchronous``, a busy timeout, foreign keys.

    The pragmas are set in a ``connect`` hook because any statement run through SQLAlchemy opens
    a transaction, and ``journal_mode`` cannot change inside one. The parent directory of a SQLite
    file is created if missing. PostgreSQL URLs without a driver use psycopg 3.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        sync = synchronous.upper()
        if sync not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA synchronous={sync}")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

    return engine


def open_store(url: str, **kwargs: Any) -> Engine:
    """An engine on the store at ``url`` with its schema migrated to the latest revision."""
    from blackbox.store.migrate import upgrade_schema  # migrate imports this module

    engine = make_engine(url, **kwargs)
    upgrade_schema(engine)
    return engine
