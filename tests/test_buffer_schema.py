"""Schema versions: an upgraded agent opens the buffer an older agent left behind, data intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blackbox.buffer import Buffer, BufferError
from blackbox.buffer.schema import SCHEMA_VERSION
from blackbox.model import Context, Sample

# The buffer as agent version 1 created it (blackbox/buffer/schema.py at schema version 1).
SCHEMA_V1 = """
CREATE TABLE readings (seq INTEGER NOT NULL, ts_us BIGINT NOT NULL, tag VARCHAR NOT NULL, value TEXT,
    quality VARCHAR(9) NOT NULL, reason TEXT, source_ts_us BIGINT, batch VARCHAR, phase VARCHAR, PRIMARY KEY (seq));
CREATE TABLE events (seq INTEGER NOT NULL, ts_us BIGINT NOT NULL, type VARCHAR NOT NULL, subject VARCHAR,
    data TEXT NOT NULL, batch VARCHAR, phase VARCHAR, PRIMARY KEY (seq));
CREATE TABLE sealed_batches (batch_seq INTEGER NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
    hash VARCHAR(64) NOT NULL, wire BLOB NOT NULL, sealed_at_us BIGINT NOT NULL, delivered_at_us BIGINT,
    PRIMARY KEY (batch_seq));
CREATE TABLE meta ("key" VARCHAR NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
"""


def v1_buffer(path: Path) -> None:
    """A version-1 buffer with two readings, an event, one delivered and one pending sealed batch."""
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V1)
        db.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)", [
            (2, 100, "EM-01.temperature", "71.5", "good", None, None, "B1", "emulsify"),
            (3, 100, "EM-01.vacuum", "-0.08", "good", None, None, "B1", "emulsify")])
        db.execute("INSERT INTO events VALUES (1, 100, 'batch.started', 'B1', '{\"batch\":\"B1\"}', 'B1', NULL)")
        db.executemany("INSERT INTO sealed_batches VALUES (?,?,?,?,?,?,?)", [
            (1, 1, 2, "a" * 64, b"wire-1", 150, 160), (2, 3, 3, "b" * 64, b"wire-2", 170, None)])
        db.executemany("INSERT INTO meta VALUES (?,?)", [("schema_version", "1"),
                                                        ("agent_state", '{"context":{"context":{"batch":"B1"}}}')])
    # WAL left behind as the old agent ran it
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()


def test_an_old_buffer_is_migrated_in_place_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v1_buffer(path)
    buf = Buffer(path)
    assert buf.migrated == [2]
    assert [r.value for r in buf.readings_between(1, 10)] == [71.5, -0.08]
    assert [b.batch_seq for b in buf.undelivered(0, 10)] == [2]  # the pending batch is still to be sent
    assert buf.load_state() == {"context": {"context": {"batch": "B1"}}}
    assert buf.commit([Sample("t", 1.0)], [], Context()).readings[0].seq == 4  # the sequence goes on
    buf.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert "dropped_at_us" in {row[1] for row in db.execute("PRAGMA table_info(sealed_batches)")}
    assert Buffer(path).migrated == []  # once


def test_a_failing_migration_leaves_the_old_buffer_untouched(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v1_buffer(path)
    with sqlite3.connect(path) as db:  # a column the migration wants to add already exists: it fails
        db.execute("ALTER TABLE sealed_batches ADD COLUMN dropped_at_us BIGINT")
    with pytest.raises(BufferError, match=r"cannot upgrade .* from schema 1 to 2.*duplicate column"):
        Buffer(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        assert db.execute("SELECT count(*) FROM readings").fetchone() == (2,)


def test_a_new_file_gets_the_current_schema(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite")
    assert buf.migrated == []
    with buf.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").scalar() == str(SCHEMA_VERSION)


def test_an_interrupted_creation_without_data_is_created_afresh(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with sqlite3.connect(path) as db:  # a version-1 agent killed between creating tables and the version row
        db.executescript(SCHEMA_V1)
    buf = Buffer(path)
    assert buf.commit([Sample("t", 1.0)], [], Context()).readings[0].seq == 1
    with buf.engine.connect() as conn:
        cols = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(sealed_batches)")}
    assert "dropped_at_us" in cols


def test_a_file_with_data_but_no_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (x)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    with pytest.raises(BufferError, match="no schema version"):
        Buffer(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT x FROM notes").fetchall() == [("keep me",)]


def test_buffer_of_a_newer_agent_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    Buffer(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(BufferError, match="newer agent"):
        Buffer(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("99",)
