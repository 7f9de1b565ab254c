"""Fixtures of the store tests (their conftest.py imports them): a fresh database on SQLite files and
on the real PostgreSQL.

PostgreSQL: one database ``bb_test_<random>`` per test session (created through the ``test``
database, dropped at the end), and one schema per test inside it. If PostgreSQL is unreachable the
PostgreSQL cases are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from services import PG_ADMIN_DB, PG_HOST, PG_PORT, PG_USER, unavailable
from sqlalchemy import Engine, text

from blackbox.store.db import make_engine
from blackbox.store.schema import create_schema


def _admin() -> psycopg.Connection:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True, connect_timeout=3
    )


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a database created for this test session."""
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {exc}")
    name = f"bb_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_engine(pg_database: str) -> Iterator[Engine]:
    """An engine whose tables live in a schema of their own (empty, no tables)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    setup = make_engine(pg_database)
    with setup.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    setup.dispose()
    engine = make_engine(pg_database, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        cleanup = make_engine(pg_database)
        with cleanup.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        cleanup.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: os.PathLike[str]) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/store.sqlite")
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest) -> Engine:
    """An engine on an empty database, once on a SQLite file and once on PostgreSQL."""
    fixture = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    engine: Engine = request.getfixturevalue(fixture)
    return engine


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:
    """An engine with the store's schema, on SQLite and on PostgreSQL."""
    create_schema(empty_engine)
    return empty_engine
