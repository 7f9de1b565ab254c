"""The Alembic migrations build exactly the schema of schema.py, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic_head import HEAD
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, inspect, select, text

from blackbox.seal import public_key_pem
from blackbox.store.chunks import READING_COLUMNS, stored_readings
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor
from blackbox.store.migrate import alembic_config, current_revision, upgrade_schema
from blackbox.store.partitions import include_name
from blackbox.store.schema import create_schema, metadata, reading_chunks


def diffs(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        return list(compare_metadata(ctx, metadata))


def test_upgrade_head_matches_the_schema(empty_engine: Engine) -> None:
    upgrade_schema(empty_engine)
    assert current_revision(empty_engine) == HEAD
    assert set(metadata.tables) <= set(inspect(empty_engine).get_table_names())
    assert diffs(empty_engine) == []
    upgrade_schema(empty_engine)  # a second run is a no-op
    assert current_revision(empty_engine) == HEAD


def test_a_database_made_by_create_schema_is_stamped(empty_engine: Engine) -> None:
    create_schema(empty_engine)
    assert current_revision(empty_engine) is None
    upgrade_schema(empty_engine)
    assert current_revision(empty_engine) == HEAD
    assert diffs(empty_engine) == []


def test_open_store_creates_and_migrates(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path}/new/dir/store.sqlite")
    try:
        assert current_revision(engine) == HEAD
        assert diffs(engine) == []
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_a_store_at_0001_keeps_its_data_and_its_keys_stay_operator_enrolled(empty_engine: Engine) -> None:


    upgrade_schema(empty_engine, "0001")
    key = Ed25519PrivateKey.generate()
    with empty_engine.begin() as conn:  # what a 0.1 store held: a gateway and its enrolled key
        conn.execute(text("INSERT INTO gateways (site, gateway, created_at_us) VALUES ('S', 'gw', 1)"))
        conn.execute(text("INSERT INTO gateway_keys (gateway_id, key_id, public_key_pem, enrolled_at_us) "
                          "VALUES (1, 'k1', :pem, 2)"), {"pem": public_key_pem(key)})
    upgrade_schema(empty_engine)
    assert current_revision(empty_engine) == HEAD
    assert diffs(empty_engine) == []
    with empty_engine.connect() as conn:
        row = conn.execute(text("SELECT enrolled_by, valid_from_seq, valid_to_seq FROM gateway_keys")).one()
    assert tuple(row) == ("operator", None, None)
    assert Ingestor(empty_engine).enroll("gw", "S", public_key_pem(Ed25519PrivateKey.generate()))


def test_readings_convert_to_chunks_and_back(empty_engine: Engine) -> None:
    """0010 turns reading rows into the chunks ingest writes, and its downgrade turns them back."""
    upgrade_schema(empty_engine, "0009")
    with empty_engine.begin() as conn:  # rows as a 0009 store held them: two sealed batches, two tags, two phases
        conn.execute(text("INSERT INTO gateways (site, gateway, created_at_us) VALUES ('S', 'gw', 1)"))
        conn.execute(text(f"INSERT INTO readings ({', '.join(READING_COLUMNS)}) VALUES (1, :seq, :b, :tag, :kind, "
                          ":num, :text, :q, :reason, :ts, :src, 'B-1', :phase)"), ROWS)
    upgrade_schema(empty_engine)
    with empty_engine.connect() as conn:
        chunks = conn.execute(select(reading_chunks).order_by(reading_chunks.c.first_seq)).all()
        back = [r._asdict() for r in stored_readings(conn)]
    assert [(c.batch_seq, c.tag, c.phase, c.n) for c in chunks] == [
        (1, "T-1", "mix", 2), (1, "T-2", "mix", 2), (1, "T-1", "heat", 1), (2, "T-1", "heat", 2)]
    assert back == EXPECTED
    command.downgrade(alembic_config(empty_engine), "0009")
    with empty_engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {', '.join(READING_COLUMNS)} FROM readings ORDER BY seq")).all()
    assert [r._asdict() for r in rows] == EXPECTED
    upgrade_schema(empty_engine)
    with empty_engine.connect() as conn:
        assert conn.execute(select(reading_chunks).order_by(reading_chunks.c.first_seq)).all() == chunks


ROWS: list[dict[str, Any]] = [
    {"seq": 1, "b": 1, "tag": "T-1", "kind": "float", "num": 70.5, "text": None, "q": "good", "reason": None,
     "ts": 1000, "src": 990, "phase": "mix"},
    {"seq": 2, "b": 1, "tag": "T-2", "kind": "int", "num": 2.0**64, "text": str(2**64 - 1), "q": "uncertain",
     "reason": "stale", "ts": 1001, "src": None, "phase": "mix"},
    {"seq": 3, "b": 1, "tag": "T-1", "kind": "null", "num": None, "text": None, "q": "bad", "reason": "open circuit",
     "ts": 1002, "src": None, "phase": "mix"},
    {"seq": 4, "b": 1, "tag": "T-2", "kind": "str", "num": None, "text": "lot 42 é", "q": "good", "reason": None,
     "ts": 1003, "src": 995, "phase": "mix"},
    {"seq": 5, "b": 1, "tag": "T-1", "kind": "bool", "num": 1.0, "text": None, "q": "good", "reason": None,
     "ts": 1004, "src": None, "phase": "heat"},
    {"seq": 6, "b": 2, "tag": "T-1", "kind": "float", "num": -0.0, "text": None, "q": "good", "reason": None,
     "ts": 999, "src": 1, "phase": "heat"},
    {"seq": 7, "b": 2, "tag": "T-1", "kind": "float", "num": 1e-300, "text": None, "q": "good", "reason": None,
     "ts": 1006, "src": 2, "phase": "heat"},
]
EXPECTED = [{"gateway_id": 1, "seq": r["seq"], "batch_seq": r["b"], "tag": r["tag"], "kind": r["kind"], "num": r["num"],
             "text": r["text"], "quality": r["q"], "reason": r["reason"], "ts_us": r["ts"], "source_ts_us": r["src"],
             "batch": "B-1", "phase": r["phase"]} for r in ROWS]
