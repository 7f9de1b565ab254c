"""The Alembic migrations build exactly the schema of schema.py, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from blackbox.store.db import open_store
from blackbox.store.migrate import current_revision, upgrade_schema
from blackbox.store.schema import create_schema, metadata


def diffs(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))


def test_upgrade_head_matches_the_schema(empty_engine: Engine) -> None:
    upgrade_schema(empty_engine)
    assert current_revision(empty_engine) == "0002"
    assert set(metadata.tables) <= set(inspect(empty_engine).get_table_names())
    assert diffs(empty_engine) == []
    upgrade_schema(empty_engine)  # a second run is a no-op
    assert current_revision(empty_engine) == "0002"


def test_a_database_made_by_create_schema_is_stamped(empty_engine: Engine) -> None:
    create_schema(empty_engine)
    assert current_revision(empty_engine) is None
    upgrade_schema(empty_engine)
    assert current_revision(empty_engine) == "0002"
    assert diffs(empty_engine) == []


def test_open_store_creates_and_migrates(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path}/new/dir/store.sqlite")
    try:
        assert current_revision(engine) == "0002"
        assert diffs(engine) == []
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
