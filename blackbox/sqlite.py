"""SQLite connection settings shared by the agent's buffer and the store's SQLite files.

Both are written by one process and read by others: WAL (readers never block the writer),
``synchronous`` as configured (``FULL``: a committed transaction survives a power cut), a busy
timeout (a reader's checkpoint or a second process waits instead of failing at once) and foreign
keys enforced. Through SQLAlchemy they are set in its ``connect`` hook: any statement through
SQLAlchemy opens a transaction, and ``journal_mode`` cannot change inside one.

Readers that must not change a file (``store web``/``trace`` on a SQLite store, ``blackbox
receipts`` on the buffer) open it with :func:`connect_readonly`. Every place that opens SQLite goes
through one of the two.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

SYNCHRONOUS_LEVELS = ("FULL", "NORMAL", "EXTRA")

BUFFER_BUSY_TIMEOUT_MS = 5_000
"""The agent's buffer: its writer is the agent's one buffer thread, which the recorder waits on, so
a lock held elsewhere (a reader's checkpoint) is waited for only briefly."""
STORE_BUSY_TIMEOUT_MS = 30_000
"""A SQLite store: ingest, ``store migrate`` and readers share the file, and each waits for the
others' transactions rather than fail."""


def apply_writer_pragmas(cursor: Any, synchronous: str, busy_timeout_ms: int) -> None:
    """Set the shared settings on a new connection's DB-API ``cursor``."""
    if synchronous not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA foreign_keys=ON")


def connect_readonly(path: Path, busy_timeout_ms: int, *,
                     isolation_level: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None = "DEFERRED",
                     check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection that can only read ``path`` (``mode=ro`` and ``query_only``), waiting up to
    ``busy_timeout_ms`` for the writer's checkpoint instead of failing at once; the other two
    arguments are :func:`sqlite3.connect`'s (and its defaults)."""
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True,
                           isolation_level=isolation_level, check_same_thread=check_same_thread)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute("PRAGMA query_only=ON")
    return conn
