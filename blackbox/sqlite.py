"""SQLite connection settings shared by the agent's buffer and the store's SQLite files.

Both are written by one process and read by others: WAL (readers never block the writer),
``synchronous`` as configured (``FULL``: a committed transaction survives a power cut), a busy
timeout (a reader's checkpoint or a second process waits instead of failing at once) and foreign
keys enforced. They are set in SQLAlchemy's ``connect`` hook: any statement through SQLAlchemy
opens a transaction, and ``journal_mode`` cannot change inside one.
"""

from __future__ import annotations

from typing import Any

SYNCHRONOUS_LEVELS = ("FULL", "NORMAL", "EXTRA")


def apply_writer_pragmas(cursor: Any, synchronous: str, busy_timeout_ms: int) -> None:
    """Set the shared settings on a new connection's DB-API ``cursor``."""
    if synchronous not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA foreign_keys=ON")
