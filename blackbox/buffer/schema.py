"""SQLite schema of the local buffer and the engine that opens it with the right pragmas.

The tables below are the *current* schema (:data:`SCHEMA_VERSION`). A buffer written by an older
agent is brought up to date by :mod:`blackbox.buffer.migrations`; change a table here only
together with a migration there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)

SCHEMA_VERSION = 2

PAGE_SIZE = 4096
JOURNAL_SIZE_LIMIT = 8 << 20
"""Bytes of WAL file kept after a checkpoint. The kept file is reused, so on a full disk the
deletes that make room can still be logged."""

Synchronous = Literal["FULL", "NORMAL"]

# Sequence keys are INTEGER PRIMARY KEY: in SQLite that is the 64-bit rowid itself, no extra index.
metadata = MetaData()

readings = Table(
    "readings",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("tag", String, nullable=False),
    Column("value", Text, nullable=True, comment="orjson-encoded value, keeps bool/int/float/str apart"),
    Column("quality", String(9), nullable=False),
    Column("reason", Text, nullable=True),
    Column("source_ts_us", BigInteger, nullable=True),
    Column("batch", String, nullable=True),
    Column("phase", String, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("type", String, nullable=False),
    Column("subject", String, nullable=True),
    Column("data", Text, nullable=False),
    Column("batch", String, nullable=True),
    Column("phase", String, nullable=True),
)

sealed = Table(
    "sealed_batches",
    metadata,
    Column("batch_seq", Integer, primary_key=True, autoincrement=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("wire", LargeBinary, nullable=False),
    Column("sealed_at_us", BigInteger, nullable=False),
    Column("delivered_at_us", BigInteger, nullable=True),
    Column("dropped_at_us", BigInteger, nullable=True,
           comment="set when the quota forced the batch out undelivered (its wire is emptied)"),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)


def open_engine(path: Path, synchronous: Synchronous = "FULL",
                quota_bytes: Callable[[], int | None] = lambda: None) -> Engine:
    """An engine on ``path`` in WAL mode; pragmas are set on every new connection.

    SQLAlchemy auto-begins a transaction on any statement, PRAGMA included, so they must be set
    in the connect hook (LIBRARY-NOTES) or they silently do nothing. ``quota_bytes()`` (asked
    on each new connection, so that the quota can change) becomes ``max_page_count``: SQLite
    itself then refuses to grow the file beyond the quota and reports it exactly like a full
    disk (``SQLITE_FULL``), so both take the same path in the agent.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        quota = quota_bytes()
        if quota is not None:
            page_size = cur.execute("PRAGMA page_size").fetchone()[0]
            # SQLite never sets it below the current size of the file
            cur.execute(f"PRAGMA max_page_count={max(quota // page_size, 1)}")
        cur.close()

    return engine
