"""Schema revisions: an upgraded agent opens the buffer an older agent left behind, data intact.

The buffers of versions 1 and 2 are made here as those agents made them (their schema and a
``meta.schema_version`` row, from before the buffer used Alembic).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from blackbox.buffer import Buffer, BufferError, convert, head_schema, upgrade
from blackbox.buffer.head_schema import SCHEMA_REVISION
from blackbox.buffer.schema import READINGS_VIEW, metadata
from blackbox.model import Context, Quality, Reading, Sample
from blackbox.seal.records import rows_of

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
    assert buf.migrated == ["0002", "0003", "0004", "0005"]
    assert [r.value for r in buf.readings_between(1, 10)] == [71.5, -0.08]
    assert [b.batch_seq for b in buf.undelivered(0, 10)] == [2]  # the pending batch is still to be sent
    assert buf.load_state() == {"context": {"context": {"batch": "B1"}}}
    assert buf.commit([Sample("t", 1.0)], [], Context()).readings[0].seq == 4  # the sequence goes on
    buf.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() is None  # one system
        assert "dropped_at_us" in {row[1] for row in db.execute("PRAGMA table_info(sealed_batches)")}
        assert db.execute("SELECT count(*) FROM receipts").fetchone() == (0,)
    assert Buffer(path).migrated == []  # once


def test_a_failing_migration_leaves_the_old_buffer_untouched(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v1_buffer(path)
    with sqlite3.connect(path) as db:  # a column the migration wants to add already exists: it fails
        db.execute("ALTER TABLE sealed_batches ADD COLUMN dropped_at_us BIGINT")
    before = dump(path)
    with pytest.raises(BufferError, match=r"cannot upgrade .* from schema revision 0001 to 0002.*duplicate column"):
        Buffer(path)
    assert dump(path) == before  # the stamp and the removed schema_version row rolled back too
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        assert db.execute("SELECT count(*) FROM readings").fetchone() == (2,)


def dump(path: Path) -> list[str]:
    """Every table's definition and rows: what a rolled-back upgrade must leave exactly as it was."""
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


def test_a_new_file_gets_the_current_schema_without_alembic(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from blackbox.buffer import Buffer; "
            f"b = Buffer(Path({str(tmp_path / 'b.sqlite')!r})); "
            "print(b.migrated, sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[] []"  # made at the head revision, by plain SQL
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
    assert Buffer(tmp_path / "b.sqlite").migrated == []


def test_a_new_file_gets_the_schema_the_revisions_and_schema_py_make(tmp_path: Path) -> None:
    Buffer(tmp_path / "new.sqlite").close()
    assert upgrade.upgrade(tmp_path / "revisions.sqlite", "FULL", None) == ["0001", "0002", "0003", "0004", "0005"]
    engine = create_engine(f"sqlite:///{tmp_path / 'tables.sqlite'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(READINGS_VIEW)
    engine.dispose()
    made = schema_of(tmp_path / "new.sqlite")
    assert made == schema_of(tmp_path / "revisions.sqlite")
    assert schema_of(tmp_path / "new.sqlite", skip="alembic_version") == schema_of(tmp_path / "tables.sqlite")


def test_the_generated_head_schema_is_what_the_revisions_make() -> None:
    generated = Path(head_schema.__file__).read_text()
    assert generated == upgrade.head_schema_source(), (
        "blackbox/buffer/head_schema.py is out of date: regenerate it as head_schema_source() says")


def test_schema_revision_is_the_head_of_the_revisions() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(upgrade.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [SCHEMA_REVISION]


def schema_of(path: Path, skip: str = "") -> tuple[Any, ...]:
    with sqlite3.connect(path) as db:
        objects = db.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE tbl_name != ? ORDER BY name",
                             (skip,)).fetchall()
        views = db.execute("SELECT sql FROM sqlite_master WHERE type='view'").fetchall()
        columns = {t: db.execute(f"PRAGMA table_info({t})").fetchall() for _, t, _ in objects}
    return objects, views, columns


def test_an_interrupted_creation_without_data_is_created_afresh(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with sqlite3.connect(path) as db:  # a version-1 agent killed between creating tables and the version row
        db.executescript(SCHEMA_V1)
    buf = Buffer(path)
    assert buf.commit([Sample("t", 1.0)], [], Context()).readings[0].seq == 1
    cols = {row[1] for row in buf.db.execute("PRAGMA table_info(sealed_batches)")}
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
        db.execute("UPDATE alembic_version SET version_num='0099'")
    before = dump(path)
    with pytest.raises(BufferError, match=r"newer agent \(schema 0099"):
        Buffer(path)
    assert dump(path) == before


def test_a_legacy_version_beyond_the_last_one_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v1_buffer(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='6' WHERE key='schema_version'")
    before = dump(path)
    with pytest.raises(BufferError, match=r"newer agent \(schema version 6"):
        Buffer(path)
    assert dump(path) == before


# The buffer as agent version 2 left it: version 1's tables and sealed_batches.dropped_at_us.
SCHEMA_V2 = SCHEMA_V1.replace("delivered_at_us BIGINT,", "delivered_at_us BIGINT, dropped_at_us BIGINT,")

V2_READINGS: list[tuple[Any, ...]] = [  # seq, ts_us, tag, value, quality, reason, source_ts_us, batch, phase
    (2, 100, "EM-01.temperature", "71.5", "good", None, None, "B1", "emulsify"),
    (3, 100, "EM-01.running", "true", "good", None, None, "B1", "emulsify"),
    (4, 100, "EM-01.count", "1", "good", None, None, "B1", "emulsify"),
    (5, 100, "EM-01.level", "1.0", "uncertain", "stale", 1_700_000_000_000_000, "B1", "emulsify"),
    # 6 is an event: a new block
    (7, 100, "EM-01.recipe", '"RM-001 \\"A\\" µm\\n"', "good", None, None, "B1", "emulsify"),
    (8, 100, "EM-01.vacuum", None, "bad", "timeout", None, "B1", "emulsify"),
    (9, 200, "EM-01.temperature", "0.30000000000000004", "good", None, None, "B1", "emulsify"),  # another time
    (10, 200, "EM-01.temperature", "-0.0", "good", None, None, "B1", "cool"),  # another phase
    (11, 200, "EM-01.temperature", "1e+300", "good", None, None, None, None),  # no batch
    (12, 200, "EM-01.counter", "18446744073709551615", "good", None, 1_700_000_000_000_001, None, None),
    (13, 200, "EM-01.mode", '"null"', "good", None, None, None, None),
]
V2_EVENTS = [(1, 100, "batch.started", "B1", '{"batch":"B1"}', "B1", None),
             (6, 100, "alarm.raised", "EM-01", '{"rule":"r1","value":1.0,"on":true}', "B1", "emulsify")]


def v2_buffer(path: Path, readings: list[tuple[Any, ...]] = V2_READINGS) -> None:
    """A version-2 buffer with ``readings``, two events, a delivered and a pending sealed batch."""
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V2)
        db.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)", readings)
        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)", V2_EVENTS)
        db.executemany("INSERT INTO sealed_batches VALUES (?,?,?,?,?,?,?,?)", [
            (1, 1, 4, "a" * 64, b"wire-1", 150, 160, None), (2, 5, 8, "b" * 64, b"wire-2", 170, None, None)])
        db.executemany("INSERT INTO meta VALUES (?,?)", [("schema_version", "2"), ("agent_state", "{}")])
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()


@pytest.mark.parametrize(("chunk", "blocks"), [
    (10_000, [(2, 5), (7, 8), (9, 9), (10, 10), (11, 13)]),
    (2, [(2, 3), (4, 5), (7, 8), (9, 9), (10, 10), (11, 12), (13, 13)]),  # memory bound: at most 2 per block
    (1, [(s, s) for s in (2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13)]),
])
def test_readings_of_a_v2_buffer_become_blocks_and_read_back_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, blocks: list[tuple[int, int]]) -> None:
    monkeypatch.setattr(convert, "_V3_CHUNK", chunk)
    path = tmp_path / "b.sqlite"
    v2_buffer(path)
    buf = Buffer(path)
    assert buf.migrated == ["0003", "0004", "0005"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT first_seq, last_seq FROM reading_blocks ORDER BY first_seq").fetchall() == blocks
        # the view gives back the old rows exactly, the values' JSON text included
        assert db.execute("SELECT * FROM readings ORDER BY seq").fetchall() == V2_READINGS
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
    expected = [Reading(s, t, None if v is None else orjson.loads(v), Quality(q), r, ts, src, b, p)
                for s, ts, t, v, q, r, src, b, p in V2_READINGS]
    back = buf.readings_between(1, 100)
    assert [(r, repr(r.value)) for r in back] == [(r, repr(r.value)) for r in expected]
    rows_r, rows_e = buf.unsealed_rows(0, 100)
    assert [list(map(repr, row)) for row in rows_r] == [list(map(repr, row)) for row in rows_of(expected)[0]]
    assert [row[0] for row in rows_e] == [1, 6] and rows_e[1][3] == {"rule": "r1", "value": 1.0, "on": True}
    assert [b.batch_seq for b in buf.undelivered(0, 10)] == [2]
    assert buf.backlog().oldest_undelivered_ts_us == 100  # seq 5, inside the first block
    assert buf.commit([Sample("t", 1.0)], [], Context()).readings[0].seq == 14  # the sequence goes on


def test_an_empty_v2_buffer_is_migrated_too(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v2_buffer(path, [])
    buf = Buffer(path)
    assert buf.migrated == ["0003", "0004", "0005"] and buf.readings_between(0, 100) == []
    assert buf.commit([Sample("t", 1.0)], [], Context()).readings[0].seq == 9  # after the last sealed batch


def test_a_migrated_buffer_has_the_schema_of_a_new_one(tmp_path: Path) -> None:
    v2_buffer(tmp_path / "old.sqlite")
    for name in ("old", "new"):
        Buffer(tmp_path / f"{name}.sqlite").close()
    assert schema_of(tmp_path / "old.sqlite") == schema_of(tmp_path / "new.sqlite")


def test_a_damaged_value_stops_the_migration_and_leaves_the_v2_buffer_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v2_buffer(path, [*V2_READINGS[:2], (4, 100, "EM-01.count", "1,", "good", None, None, "B1", "emulsify")])
    before = dump(path)
    with pytest.raises(BufferError,
                       match=r"from schema revision 0002 to 0003 .*the value of reading 4 is not JSON \('1,'\)"):
        Buffer(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
        assert db.execute("SELECT count(*) FROM readings").fetchone() == (3,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name='reading_blocks'").fetchall() == []
    assert dump(path) == before


KILLED_MID_UPGRADE = """
import sys
from pathlib import Path

from blackbox.buffer import Buffer, convert

real = convert.reading_blocks


def reading_blocks(cur):  # revision 0003 done, inside the transaction: say so and wait to be killed
    real(cur)
    print("in revision 0003", flush=True)
    sys.stdin.read()


convert.reading_blocks = reading_blocks
Buffer(Path(sys.argv[1]))
"""


def test_a_kill_mid_upgrade_leaves_the_old_buffer_which_upgrades_afterwards(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    v2_buffer(path)
    before = dump(path)
    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_UPGRADE, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "in revision 0003\n"  # bounded: the child ends (EOF) if it fails
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert dump(path) == before  # nothing of revisions 0002..0003 nor of the stamp was committed
    buf = Buffer(path)
    assert buf.migrated == ["0003", "0004", "0005"]
    assert [r.seq for r in buf.readings_between(1, 100)] == [row[0] for row in V2_READINGS]
