"""The Alembic migrations build exactly the schema of schema.py, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic_head import HEAD
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, inspect, text

from blackbox.seal import public_key_pem
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor
from blackbox.store.migrate import current_revision, upgrade_schema
from blackbox.store.partitions import include_name
from blackbox.store.schema import create_schema, metadata


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
