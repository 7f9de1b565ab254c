"""Reading rows of the store's chunks, read and edited one reading at a time (what a DBA could do).

The store keeps readings as column chunks (:mod:`blackbox.store.chunks`); these helpers let tests
look at and tamper with single readings: a chunk whose readings change is rewritten with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select

from blackbox.store.chunks import CHUNK_COLUMNS, ReadingRow, decode_chunk, decode_value, explode, make_chunks
from blackbox.store.chunks import stored_readings as _stored
from blackbox.store.schema import reading_chunks


def readings_of(db: Engine | Connection, *where: Any) -> list[ReadingRow]:
    """Every stored reading (of the chunks matching ``where``), by gateway and seq."""
    if isinstance(db, Engine):
        with db.connect() as conn:
            return _stored(conn, *where)
    return _stored(db, *where)


def _records(rows: list[ReadingRow]) -> list[list[Any]]:
    return [[r.seq, r.tag, decode_value(r.kind, r.num, r.text), r.quality, r.reason, r.ts_us, r.source_ts_us,
             r.batch, r.phase] for r in sorted(rows, key=lambda r: r.seq)]


def insert_readings(conn: Connection, rows: list[ReadingRow]) -> None:
    """Store readings as new chunks (of the first row's gateway and sealed batch)."""
    for chunk in make_chunks(_records(rows), rows[0].gateway_id, rows[0].batch_seq):
        conn.execute(insert(reading_chunks).values(dict(zip(CHUNK_COLUMNS, chunk, strict=True))))


def rewrite_readings(conn: Connection, change: Callable[[ReadingRow], ReadingRow | None]) -> int:
    """Apply ``change`` to every stored reading (``None`` deletes it); returns how many changed."""
    c = reading_chunks.c
    n = 0
    for row in conn.execute(select(reading_chunks)).all():
        old = [ReadingRow(*r) for r in explode(decode_chunk(row))]
        new = [x for r in old if (x := change(r)) is not None]
        changed = len(new) != len(old) or any(a != b for a, b in zip(old, new, strict=False))
        if not changed:
            continue
        n += sum(1 for r in old if change(r) != r)
        conn.execute(delete(reading_chunks).where(c.gateway_id == row.gateway_id, c.first_seq == row.first_seq,
                                                  c.first_ts_us == row.first_ts_us))
        if new:
            insert_readings(conn, new)
    return n


def set_num(old: float, new: float) -> Callable[[Connection], int]:
    """A tamper: every reading whose value is ``old`` now says ``new``."""
    return lambda conn: rewrite_readings(conn, lambda r: r._replace(num=new) if r.num == old else r)


def drop_num(value: float) -> Callable[[Connection], int]:
    """A tamper: every reading whose value is ``value`` removed."""
    return lambda conn: rewrite_readings(conn, lambda r: None if r.num == value else r)
