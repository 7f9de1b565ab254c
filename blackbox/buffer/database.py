"""The buffer's SQLite file: one ``sqlite3`` connection with the buffer's settings, and its transactions.

The agent's buffer talks to SQLite through the standard library only. SQLAlchemy cost the agent
about 26 MiB of memory for its modules and CPU for every statement it built, and the buffer needs
none of what it offers: one file, one writer thread, hand-written SQL. SQLAlchemy and Alembic are
imported only when a buffer must be upgraded (:mod:`blackbox.buffer.upgrade`); they apply the same
settings there (:func:`apply_buffer_pragmas`).

The connection is in autocommit mode (``isolation_level=None``): a statement outside
:func:`transaction` is its own transaction, and a transaction is exactly what :func:`transaction`
brackets. (Python's default would begin one implicitly before the first ``INSERT`` only, leaving
the reads before it outside.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from blackbox.sqlite import BUFFER_BUSY_TIMEOUT_MS, apply_writer_pragmas

PAGE_SIZE = 4096
JOURNAL_SIZE_LIMIT = 8 << 20
"""Bytes of WAL file kept after a checkpoint. The kept file is reused, so on a full disk the
deletes that make room can still be logged."""

Synchronous = Literal["FULL", "NORMAL"]


def apply_buffer_pragmas(cur: Any, synchronous: str, quota_bytes: int | None) -> None:
    """Set the buffer's settings on a new connection's DB-API cursor ``cur``.

    ``quota_bytes`` becomes ``max_page_count``: SQLite itself then refuses to grow the file beyond
    the quota and reports it exactly like a full disk (``SQLITE_FULL``), so both take the same path
    in the agent. SQLite never sets it below the file's current size.
    """
    cur.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
    apply_writer_pragmas(cur, synchronous, BUFFER_BUSY_TIMEOUT_MS)
    cur.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    if quota_bytes is not None:
        page_size = cur.execute("PRAGMA page_size").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count={max(quota_bytes // page_size, 1)}")


def connect(path: Path, synchronous: str, quota_bytes: int | None) -> sqlite3.Connection:
    """The buffer's connection on ``path`` (made, with its folder, if missing), in autocommit mode.

    ``check_same_thread`` is off: the agent opens the buffer on its main thread and then uses it
    only from its one buffer thread, never from two at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        cur = conn.cursor()
        apply_buffer_pragmas(cur, synchronous, quota_bytes)
        cur.close()
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[sqlite3.Cursor]:
    """A cursor inside one transaction opened by ``begin`` (``BEGIN IMMEDIATE`` takes the write lock at
    once): committed when the block ends, rolled back if it raises."""
    cur = conn.cursor()
    try:
        cur.execute(begin)
        yield cur
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (a full disk, for one)
            conn.execute("ROLLBACK")
        raise
    finally:
        cur.close()
