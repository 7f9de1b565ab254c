"""Schema versions of the buffer: create a new one, or bring an older agent's buffer up to date.

An upgraded agent must open the buffer its predecessor left behind: that buffer may hold data the
store has not acknowledged yet. Each migration takes a buffer from version ``n - 1`` to ``n``;
all of them and the new version number are committed in one transaction, so a crash half-way
leaves the old buffer exactly as it was. A buffer of a *newer* agent is refused, never touched.

Python's ``sqlite3`` runs DDL outside any transaction unless told otherwise, so this module
drives the transaction itself (``BEGIN IMMEDIATE`` … ``COMMIT``) on the DBAPI connection. That is
why the buffer does not use Alembic like the store (docs/architecture.md, "Schema versions"):
Alembic runs SQLite DDL without a transaction, so a kill -9 mid-upgrade could leave a half-changed
buffer, and importing it would add about 130 ms of CPU to every agent start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.schema import CreateTable

from blackbox.buffer.schema import READINGS_VIEW, SCHEMA_VERSION, metadata

Migration = Callable[[sqlite3.Cursor], None]


class BufferVersionError(Exception):
    """The buffer cannot be opened by this agent (written by a newer one, or unrecognisable)."""


def _v2_droppable_batches(cur: sqlite3.Cursor) -> None:
    cur.execute("ALTER TABLE sealed_batches ADD COLUMN dropped_at_us BIGINT")


_V3_READING_BLOCKS = """CREATE TABLE reading_blocks (
    first_seq INTEGER NOT NULL, last_seq BIGINT NOT NULL, ts_us BIGINT NOT NULL, batch VARCHAR, phase VARCHAR,
    tags TEXT NOT NULL, vals TEXT NOT NULL, qualities TEXT, reasons TEXT, source_ts_us TEXT, PRIMARY KEY (first_seq))"""
_V3_CHUNK = 10_000
"""Readings fetched at a time by migration 3, and the most put in one block: memory stays bounded at any size."""


def _v3_reading_blocks(cur: sqlite3.Cursor) -> None:
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


_V4_RECEIPTS = """CREATE TABLE receipts (
    batch_seq INTEGER NOT NULL, hash VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, log_index BIGINT NOT NULL,
    tree_size BIGINT NOT NULL, received_at_us BIGINT NOT NULL, receipt TEXT NOT NULL, checkpoint TEXT NOT NULL,
    inclusion TEXT NOT NULL, accepted_at_us BIGINT NOT NULL, PRIMARY KEY (batch_seq))"""


def _v4_receipts(cur: sqlite3.Cursor) -> None:
    cur.execute(_V4_RECEIPTS)


_V5_RULE_STATE = """CREATE TABLE rule_state (key VARCHAR NOT NULL, state TEXT NOT NULL, PRIMARY KEY (key))"""


def _v5_rule_state(cur: sqlite3.Cursor) -> None:
    """The rules' state moves out of the one ``agent_state`` value into one row per rule.

    The saved state of version 1 (``{"v": 1, "alarms": {id: …}, "monitors": {id: …}, "flood": …,
    "counts": {id: …}}``) becomes the rows of version 2: per alarm id ``{"a": …, "m": …, "c": …}``
    and the engine's row ``""``, so an upgraded agent keeps its alarms' states.
    """
    cur.execute(_V5_RULE_STATE)
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


MIGRATIONS: dict[int, tuple[str, Migration]] = {
    2: ("sealed batches can be dropped under the disk quota (dropped_at_us)", _v2_droppable_batches),
    3: ("readings stored in blocks, one row per commit (reading_blocks; readings becomes a view)",
        _v3_reading_blocks),
    4: ("the store's signed receipts of delivered batches are kept (receipts)", _v4_receipts),
    5: ("the rules' state is saved as one row per rule, only the changed ones per commit (rule_state)",
        _v5_rule_state),
}
"""Target version -> (what changes, how)."""


def prepare(engine: Engine, path: Path) -> list[int]:
    """Create the schema in an empty file or migrate an old one; return the versions applied."""
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        if not isinstance(dbapi, sqlite3.Connection):
            raise RuntimeError("internal error: expected isinstance(dbapi, sqlite3.Connection)")
        saved_isolation = dbapi.isolation_level
        dbapi.isolation_level = None  # explicit BEGIN/COMMIT below, DDL included
        cur = dbapi.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                applied = _prepare(cur, engine, path)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return applied
        finally:
            cur.close()
            dbapi.isolation_level = saved_isolation
    finally:
        raw.close()


def _prepare(cur: sqlite3.Cursor, engine: Engine, path: Path) -> list[int]:
    found = _version(cur)
    if found is None:
        # A new file; or one whose creation by a version-1 agent was interrupted (tables, no data).
        for name in _tables(cur):
            if cur.execute(f'SELECT EXISTS (SELECT 1 FROM "{name}")').fetchone()[0]:
                raise BufferVersionError(f"{path} holds data but no schema version: it was not written by "
                                         "blackbox, or was damaged; move it aside and keep it for analysis")
            cur.execute(f'DROP TABLE "{name}"')
        for table in metadata.sorted_tables:
            cur.execute(str(CreateTable(table).compile(dialect=engine.dialect)))
        cur.execute(READINGS_VIEW)
        _set_version(cur, SCHEMA_VERSION)
        return []
    if found > SCHEMA_VERSION:
        raise BufferVersionError(f"{path} was written by a newer agent (schema {found}, this agent knows "
                                 f"{SCHEMA_VERSION}); upgrade the agent, do not delete the buffer")
    applied = []
    for version in range(found + 1, SCHEMA_VERSION + 1):
        what, migrate = MIGRATIONS[version]
        try:
            migrate(cur)
        except (sqlite3.Error, ValueError) as exc:
            raise BufferVersionError(f"cannot upgrade {path} from schema {version - 1} to {version} ({what}): "
                                     f"{exc}; the buffer is left as it was") from exc
        applied.append(version)
    if applied:
        _set_version(cur, SCHEMA_VERSION)
    return applied


def _tables(cur: sqlite3.Cursor) -> set[str]:
    return {name for (name,) in cur.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name NOT LIKE 'sqlite_%'")}


def _version(cur: sqlite3.Cursor) -> int | None:
    if "meta" not in _tables(cur):
        return None
    row = cur.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return None if row is None else int(row[0])


def _set_version(cur: sqlite3.Cursor, version: int) -> None:
    cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(version),))
