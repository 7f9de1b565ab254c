"""SQLite schema of the local buffer and the engine that opens it with the right pragmas."""

from __future__ import annotations

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

SCHEMA_VERSION = 1

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
)

meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)



def open_engine(path: Path, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> Engine:
    """An engine on ``path`` in WAL mode; pragmas are set on every new connection.

    SQLAlchemy auto-begins a transaction on any statement, PRAGMA included, so they must be set
    in the connect hook (LIBRARY-NOTES) or they silently do nothing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine
