"""SQLite schema of the local buffer, for its Alembic revisions, and the engine they run on.

The tables below are the *current* schema (:data:`~blackbox.buffer.migrate.SCHEMA_REVISION`).
Buffers, new ones included, are made and brought up to date by the Alembic revisions in
``blackbox/buffer/migrations/versions`` (:mod:`blackbox.buffer.migrate`); change a table here only
together with a new revision there. The agent itself reads and writes the buffer without
SQLAlchemy (:mod:`blackbox.buffer.database`): this module is imported only to upgrade a buffer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

from blackbox.buffer.database import apply_buffer_pragmas

# Sequence keys are INTEGER PRIMARY KEY: in SQLite that is the 64-bit rowid itself, no extra index.
metadata = MetaData()

reading_blocks = Table(
    "reading_blocks",
    metadata,
    Column("first_seq", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("batch", String, nullable=True),
    Column("phase", String, nullable=True),
    Column("tags", Text, nullable=False, comment="JSON list of the tag names"),
    Column("vals", Text, nullable=False, comment="JSON list of the values, keeps bool/int/float/str/null apart"),
    Column("qualities", Text, nullable=True, comment='JSON list of "good"/"uncertain"/"bad"; NULL: all good'),
    Column("reasons", Text, nullable=True, comment="JSON list of reasons (str or null); NULL: none has one"),
    Column("source_ts_us", Text, nullable=True, comment="JSON list of source times (int or null); NULL: none"),
)
"""Readings in blocks: the readings ``first_seq..last_seq`` (contiguous sequence numbers, one time
and context) as one row of JSON columns, index ``i`` of each list being reading ``first_seq + i``.

A poll cycle of 2,000 tags stored as 2,000 rows cost about 2.6 µs of SQLite time per reading, more
than anything else the agent did per reading; as one row, about 0.1 µs. A block is usually one
commit; pruning and dropping may take part of one (the rest is rewritten as a block).
"""

READINGS_VIEW = """CREATE VIEW readings AS
SELECT b.first_seq + v.key AS seq, b.ts_us AS ts_us, json_extract(b.tags, v.fullkey) AS tag,
       CASE v.type WHEN 'null' THEN NULL
            ELSE substr(json_extract(b.vals, v.fullkey, v.fullkey), 2,
                        (length(json_extract(b.vals, v.fullkey, v.fullkey)) - 3) / 2) END AS value,
       coalesce(json_extract(b.qualities, v.fullkey), 'good') AS quality,
       json_extract(b.reasons, v.fullkey) AS reason,
       json_extract(b.source_ts_us, v.fullkey) AS source_ts_us,
       b.batch AS batch, b.phase AS phase
FROM reading_blocks AS b, json_each(b.vals) AS v"""
"""One row per reading as the buffer stored them before blocks (schema 2), for inspection with the
``sqlite3`` shell and for tests: ``value`` is the value's JSON text, NULL for a missing value.

Slow on big blocks (each lookup walks its list), so never used by the agent. The value's text is
taken exactly as stored: ``json_extract`` with two paths returns the JSON array ``[v,v]`` rendered
from the stored text, where one path would give an SQL value (a float printed with 15 digits);
``->`` would do it directly but needs SQLite 3.38.
"""

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

receipts = Table(
    "receipts",
    metadata,
    Column("batch_seq", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("status", String(16), nullable=False, comment="stored or duplicate"),
    Column("log_index", BigInteger, nullable=False, comment="The batch's entry in the store's transparency log."),
    Column("tree_size", BigInteger, nullable=False),
    Column("received_at_us", BigInteger, nullable=False, comment="When the store accepted it (its log entry)."),
    Column("receipt", Text, nullable=False, comment="The signed receipt (a signed note), exactly as received."),
    Column("checkpoint", Text, nullable=False, comment="The signed tree head it names."),
    Column("inclusion", Text, nullable=False, comment="JSON list of the inclusion proof's hashes (base64)."),
    Column("accepted_at_us", BigInteger, nullable=False, comment="When this gateway verified and accepted it."),
)
"""The store's receipts this gateway verified, one per delivered batch: kept after the batch is
pruned, as the gateway's proof that the store accepted it (``blackbox receipts``)."""

rule_state = Table(
    "rule_state",
    metadata,
    Column("key", String, primary_key=True, comment="alarm id of the rule; '' for the engine's own row"),
    Column("state", Text, nullable=False, comment="JSON: what the rule keeps across a restart"),
)
"""The rule engine's state, one row per rule that has any (:meth:`blackbox.rules.RuleEngine.state`).

Written with every commit, in its transaction, but only the rows that changed: with 10,000
rules the whole state as one value cost 23 ms per commit.
"""

meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)


def open_engine(path: Path, synchronous: str, quota_bytes: int | None) -> Engine:
    """An engine on ``path`` with the buffer's settings on every new connection, for its upgrade.

    SQLAlchemy auto-begins a transaction on any statement, PRAGMA included, so they must be set
    in the connect hook (LIBRARY-NOTES) or they silently do nothing.
    """
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        apply_buffer_pragmas(cur, synchronous, quota_bytes)
        cur.close()

    return engine
