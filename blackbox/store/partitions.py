"""Monthly partitions of the ``reading_chunks`` table on PostgreSQL (declarative partitioning by ``first_ts_us``).

The table is ``PARTITION BY RANGE (first_ts_us)`` with a ``reading_chunks_default`` partition, so an insert is
never refused whatever its time (a gateway replaying an old outage, a clock far off). The store
keeps one partition per calendar month (UTC), ``reading_chunks_pYYYYMM``, created ahead of time by
:func:`ensure_partitions` — at start and hourly — and for any month whose rows sit in the default
partition (those rows are moved into the new partition in the same transaction, then it is
attached). SQLite keeps a plain table; everything here is a no-op there.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

from blackbox.model import now_us

log = logging.getLogger(__name__)

DEFAULT_PARTITION = "reading_chunks_default"
PARTITION_NAME = re.compile(r"^reading_chunks_(default|p\d{6})$")
_LOCK_KEY = 0x626C6B62_7061  # pg_advisory_xact_lock key: one partition maintainer at a time
_FIRST_YEAR, _LAST_YEAR = 1971, 9998
"""Months outside these years stay in the default partition (a clock that far off is a finding, not data)."""


def is_partition(name: str | None) -> bool:
    """Whether a table name is one of the reading chunks' partitions (not in :mod:`blackbox.store.schema`)."""
    return name is not None and PARTITION_NAME.match(name) is not None


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic ``include_name`` hook: the schema comparison leaves the partitions out."""
    return not (type_ == "table" and is_partition(name))


def month_start_us(year: int, month: int) -> int:
    """Microseconds since the epoch at 00:00 UTC on the first day of ``year``-``month``."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1_000_000


def partition_name(year: int, month: int) -> str:
    return f"reading_chunks_p{year:04d}{month:02d}"


def is_partitioned(conn: Connection) -> bool:
    """Whether ``reading_chunks`` (in the connection's search path) is a partitioned table."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.execute(text(
        "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = to_regclass('reading_chunks')")).scalar_one())


def existing_partitions(conn: Connection) -> list[str]:
    """Names of the partitions attached to ``reading_chunks``, sorted."""
    rows = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('reading_chunks') ORDER BY c.relname"))
    return [r[0] for r in rows]


def ensure_partitions(engine: Engine, ahead: int = 3, *, at_us: int | None = None) -> list[str]:
    """Create the monthly partitions from last month to ``ahead`` months after this one, and those
    of months that have rows in the default partition; returns the names created.

    Safe with several store workers: one transaction at a time holds an advisory lock.
    """
    now = datetime.fromtimestamp((now_us() if at_us is None else at_us) / 1e6, UTC)
    created: list[str] = []
    with engine.begin() as conn:
        if not is_partitioned(conn):
            return created
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        months = {(now.year + (now.month - 1 + d) // 12, (now.month - 1 + d) % 12 + 1) for d in range(-1, ahead + 1)}
        stray = conn.execute(text(
            "SELECT DISTINCT extract(year FROM t)::int, extract(month FROM t)::int FROM "
            f"(SELECT to_timestamp(first_ts_us / 1e6) AT TIME ZONE 'UTC' AS t FROM {DEFAULT_PARTITION}) m"))
        months |= {(y, m) for y, m in stray if _FIRST_YEAR <= y <= _LAST_YEAR}
        have = set(existing_partitions(conn))
        for year, month in sorted(months):
            name = partition_name(year, month)
            if name not in have:
                _create(conn, name, month_start_us(year, month), month_start_us(year, month + 1))
                created.append(name)
    if created:
        log.info("created reading chunk partitions %s", ", ".join(created))
    return created


def _create(conn: Connection, name: str, lo: int, hi: int) -> None:
    """A partition for ``[lo, hi)``: rows of that range already in the default partition move into it."""
    conn.execute(text(f'CREATE TABLE "{name}" (LIKE reading_chunks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'))
    moved = conn.execute(text(
        f'WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE first_ts_us >= :lo AND first_ts_us < :hi RETURNING *) '
        f'INSERT INTO "{name}" SELECT * FROM moved'), {"lo": lo, "hi": hi}).rowcount
    conn.execute(text(f'ALTER TABLE reading_chunks ATTACH PARTITION "{name}" FOR VALUES FROM ({lo}) TO ({hi})'))
    if moved:
        log.warning("moved %d reading chunks from the default partition into %s", moved, name)


__all__ = ["DEFAULT_PARTITION", "ensure_partitions", "existing_partitions", "include_name", "is_partition",
           "is_partitioned", "month_start_us"]
