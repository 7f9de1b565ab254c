"""The data-moving parts of the buffer's Alembic revisions (``blackbox/buffer/migrations/versions``).

They run on the DB-API cursor of the upgrade's connection, inside its one transaction
(:mod:`blackbox.buffer.migrate`): a failure, or a kill, leaves the old buffer exactly as it was.
Kept in an importable module, not in the revision files, so that tests can run them with small
chunks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import Connection

from blackbox.buffer.schema import READINGS_VIEW


def cursor_of(conn: Connection) -> sqlite3.Cursor:
    """A DB-API cursor on ``conn``'s connection: in its transaction."""
    dbapi = conn.connection.driver_connection
    if not isinstance(dbapi, sqlite3.Connection):
        raise RuntimeError(f"the buffer is SQLite, not {type(dbapi).__name__}")
    return dbapi.cursor()


_V3_READING_BLOCKS = """CREATE TABLE reading_blocks (
    first_seq INTEGER NOT NULL, last_seq BIGINT NOT NULL, ts_us BIGINT NOT NULL, batch VARCHAR, phase VARCHAR,
    tags TEXT NOT NULL, vals TEXT NOT NULL, qualities TEXT, reasons TEXT, source_ts_us TEXT, PRIMARY KEY (first_seq))"""
_V3_CHUNK = 10_000
"""Readings fetched at a time by revision 0003, and the most put in one block: memory stays bounded at any size."""


def reading_blocks(cur: sqlite3.Cursor) -> None:
    """One row per reading becomes blocks of consecutive seqs with one time and context (a view keeps the old rows).

    Each stored value is parsed on the way (so a damaged one stops the upgrade, naming it) and
    written back exactly: orjson reads and writes the same text.
    """
    cur.execute(_V3_READING_BLOCKS)
    source = cur.connection.cursor()
    try:
        rows = source.execute("SELECT seq, ts_us, tag, value, quality, reason, source_ts_us, batch, phase "
                              "FROM readings ORDER BY seq")
        for block in _v3_blocks(iter(lambda: rows.fetchmany(_V3_CHUNK), [])):
            cur.execute("INSERT INTO reading_blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", block)
    finally:
        source.close()
    cur.execute("DROP TABLE readings")
    cur.execute(READINGS_VIEW)


def _v3_blocks(chunks: Iterator[list[Any]]) -> Iterator[tuple[Any, ...]]:
    """Block rows of schema 3 from chunks of reading rows of schema 2 in seq order."""
    run: list[Any] = []
    for chunk in chunks:
        for row in chunk:
            if run and (row[0] != run[-1][0] + 1 or row[1] != run[-1][1] or row[7:] != run[-1][7:]
                        or len(run) == _V3_CHUNK):
                yield _v3_block(run)
                run = []
            run.append(row)
    if run:
        yield _v3_block(run)


def _v3_block(run: list[Any]) -> tuple[Any, ...]:
    seqs, ts, tags, values, qualities, reasons, sources, batches, phases = zip(*run, strict=True)
    vals = [None if v is None else _v3_value(seq, v) for seq, v in zip(seqs, values, strict=True)]
    n = len(run)
    return (seqs[0], seqs[-1], ts[0], batches[0], phases[0], orjson.dumps(tags).decode(), orjson.dumps(vals).decode(),
            None if qualities.count("good") == n else orjson.dumps(qualities).decode(),
            None if reasons.count(None) == n else orjson.dumps(reasons).decode(),
            None if sources.count(None) == n else orjson.dumps(sources).decode())


def _v3_value(seq: int, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the value of reading {seq} is not JSON ({text[:40]!r}): {exc}") from None


def rule_state(cur: sqlite3.Cursor) -> None:
    """The rules' state moves out of the one ``agent_state`` value into one row per rule.

    The saved state of version 1 (``{"v": 1, "alarms": {id: …}, "monitors": {id: …}, "flood": …,
    "counts": {id: …}}``) becomes the rows of version 2: per alarm id ``{"a": …, "m": …, "c": …}``
    and the engine's row ``""``, so an upgraded agent keeps its alarms' states.
    """
    row = cur.execute("SELECT value FROM meta WHERE key='agent_state'").fetchone()
    if row is None:
        return
    state = orjson.loads(row[0])
    old = state.pop("rules", None)
    if isinstance(old, dict) and old.get("v") == 1:
        rows: dict[str, dict[str, Any]] = {}
        for part, field in (("alarms", "a"), ("monitors", "m"), ("counts", "c")):
            for alarm_id, value in old[part].items():
                rows.setdefault(alarm_id, {})[field] = value
        rows[""] = {"v": 2, "flood": old["flood"], "counts": {}}
        cur.executemany("INSERT INTO rule_state (key, state) VALUES (?, ?)",
                        [(k, orjson.dumps(v).decode()) for k, v in rows.items()])
    cur.execute("UPDATE meta SET value=? WHERE key='agent_state'", (orjson.dumps(state).decode(),))
