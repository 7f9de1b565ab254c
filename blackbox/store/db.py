"""Engine construction for the store: the writers' engine (SQLite pragmas) and the read-only one.

Only ingest (``store serve``, ``store enroll``) and ``store migrate`` write. Every query (trace,
gateways, export, verify, the HTTP API) opens the store with :func:`open_store_readonly`, which
cannot create, migrate or write anything: SQLite files are opened with ``mode=ro``, PostgreSQL
sessions with ``default_transaction_read_only``, and the schema must already be at the revision
this version of blackbox expects.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import QueuePool

from blackbox.sqlite import STORE_BUSY_TIMEOUT_MS, SYNCHRONOUS_LEVELS, apply_writer_pragmas, connect_readonly

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
PG_CONNECT_TIMEOUT_S = 5


class StoreUnavailable(Exception):
    """The store cannot be opened: a one-line message for the user and the exit status to use.

    ``exit_code`` is 2 for a URL that is not a store URL (a usage mistake), 1 for a store that is
    missing, unreachable, or has no or another schema revision.
    """

    def __init__(self, message: str, exit_code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
        if sync not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                apply_writer_pragmas(cursor, sync, STORE_BUSY_TIMEOUT_MS)
            finally:
                cursor.close()

    return engine


def open_store(url: str, **kwargs: Any) -> Engine:
    """An engine on the store at ``url`` with its schema migrated to the latest revision."""
    from blackbox.store.migrate import upgrade_schema  # migrate imports this module

    engine = make_engine(url, **kwargs)
    upgrade_schema(engine)
    return engine


def parse_store_url(url: str) -> URL:
    """The URL of a SQLite or PostgreSQL store, or :class:`StoreUnavailable` (exit 2) naming the problem."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreUnavailable(f"{url!r} is not a database URL; give sqlite:///PATH or "
                               f"postgresql://USER@HOST:PORT/DATABASE", EXIT_USAGE) from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in ("sqlite", "postgresql"):
        raise StoreUnavailable(f"{parsed.render_as_string(hide_password=True)!r}: the store runs on SQLite or "
                               f"PostgreSQL, not {backend!r}", EXIT_USAGE)
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StoreUnavailable(f"{url!r} names no SQLite file; give sqlite:///PATH", EXIT_USAGE)
    return parsed


def where(url: URL) -> str:
    """The database a URL points at, for messages (never the password)."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    host = f"{url.host or 'localhost'}:{url.port or 5432}"
    user = f" as {url.username}" if url.username else ""
    return f"PostgreSQL database {url.database or '(default)'} at {host}{user}"


def open_store_readonly(url: str, **kwargs: Any) -> Engine:
    """An engine that can only read the store at ``url``; :class:`StoreUnavailable` if it cannot be used.

    Nothing is created: a missing SQLite file, an unreachable server, a database without the
    store's schema or with another revision of it are each one :class:`StoreUnavailable` naming
    what to do. Every transaction on the engine is read-only (SQLite ``mode=ro`` and
    ``query_only``; PostgreSQL ``default_transaction_read_only``), so it also works for a
    database role that was granted nothing but ``SELECT``. On SQLite, ``engine.begin()`` starts a
    real transaction, so every query inside sees one snapshot, like PostgreSQL's REPEATABLE READ.
    """
    parsed = parse_store_url(url)
    engine = readonly_engine(url, **kwargs)
    try:
        check_schema(engine, where(parsed))
    except BaseException:
        engine.dispose()
        raise
    return engine


def readonly_engine(url: str, **kwargs: Any) -> Engine:
    """:func:`open_store_readonly`'s engine without its check of the schema (for a process handed the URL
    of a store another one checked)."""
    parsed = parse_store_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_readonly(parsed, **kwargs)
    return _postgresql_readonly(parsed, **kwargs)


def _sqlite_readonly(url: URL, **kwargs: Any) -> Engine:
    path = Path(url.database or "")
    if not path.is_file():
        raise StoreUnavailable(f"no store at {path}: the SQLite file does not exist (create a store with "
                               f"`blackbox store migrate --db sqlite:///{path}`, or check the path)")

    def connect() -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions from the driver; the "begin" hook below
        # starts them, so that a transaction is a snapshot.
        return connect_readonly(path, STORE_BUSY_TIMEOUT_MS, isolation_level=None, check_same_thread=False)

    # A pool of its own: given "sqlite://" SQLAlchemy would choose the SingletonThreadPool of in-memory
    # databases, which closes the connection of one thread when more than five threads use it — under the
    # web window's concurrent requests, a connection closed while another thread reads (libsqlite3 crashes).
    kwargs.setdefault("poolclass", QueuePool)
    engine = create_engine("sqlite://", creator=connect, **kwargs)

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def _postgresql_readonly(url: URL, **kwargs: Any) -> Engine:
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    connect_args = dict(kwargs.pop("connect_args", {}))
    # connect_args replace the URL's query parameters: keep the URL's options (a search_path, say)
    url_options = url.query.get("options")
    given = [url_options] if isinstance(url_options, str) else list(url_options or ())
    connect_args["options"] = " ".join(
        x for x in (*given, connect_args.get("options"), "-c default_transaction_read_only=on") if x)
    if "connect_timeout" not in url.query:
        connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
    try:
        return create_engine(url, connect_args=connect_args, **kwargs)
    except NoSuchModuleError as exc:
        raise StoreUnavailable(f"{url.drivername!r} is not a database driver blackbox can use ({exc})",
                               EXIT_USAGE) from None


def check_schema(engine: Engine, label: str) -> None:
    """The database holds the store's schema at the revision this blackbox expects, else :class:`StoreUnavailable`."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from blackbox.store.migrate import alembic_config  # migrate imports this module

    scripts = ScriptDirectory.from_config(alembic_config(engine))
    head = scripts.get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as exc:
        raise StoreUnavailable(f"cannot open the {label}: {first_line(exc)}") from None
    migrate = "run `blackbox store migrate` with the same --db or --config"
    if current is None:
        raise StoreUnavailable(f"the {label} holds no blackbox store schema; {migrate} to create it")
    if current != head:
        known = {s.revision for s in scripts.walk_revisions()}
        if current in known:
            raise StoreUnavailable(f"the {label} has store schema revision {current}, this blackbox needs {head}; "
                                   f"{migrate}")
        raise StoreUnavailable(f"the {label} has store schema revision {current}, unknown to this blackbox "
                               f"(made by a newer version?); upgrade blackbox")


def first_line(exc: BaseException) -> str:
    """The first line of a database error's own message, without SQLAlchemy's SQL and background link."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    return text.splitlines()[0]
