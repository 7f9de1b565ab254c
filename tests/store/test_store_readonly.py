"""Query paths cannot write: the store opened read-only, under a SELECT-only role, and one-line errors.

Every query command (``trace``, ``store gateways``, ``store export``, ``store verify``) is run
against stores that cannot serve it (no file, no server, no schema, an older schema, not a URL):
each must exit 1 or 2 with one line on stderr, no traceback, and leave nothing behind.
"""

from __future__ import annotations

import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from services import PG_HOST, PG_PORT, PG_USER
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError
from store_synth import GATEWAY, SITE, Gateway, production_batch
from typer.testing import CliRunner

from blackbox.cli.main import app
from blackbox.store.db import StoreUnavailable, make_engine, open_store_readonly
from blackbox.store.gateways import export_batches, gateway_overview
from blackbox.store.ingest import Ingestor
from blackbox.store.migrate import current_revision, upgrade_schema
from blackbox.store.trace import trace_batch

BATCH = "FC050-2026-1125-01"


def pg_url(database_url: str, schema: str, user: str = PG_USER) -> str:
    """A URL whose sessions work in ``schema`` (through the libpq ``options`` parameter)."""
    base = database_url.replace(f"//{PG_USER}@", f"//{user}@", 1)
    return f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_schema(pg_database: str) -> Iterator[tuple[str, str]]:
    """``(url, schema)``: an empty schema of the session's PostgreSQL database, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_database)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_url(pg_database, schema), schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a database with nothing in it (the SQLite file does not exist yet)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite"
    url, _schema = request.getfixturevalue("pg_schema")
    return str(url)


def fill(url: str) -> None:
    """Migrate the store at ``url`` and ingest one production batch into it (the writer's side)."""
    engine = make_engine(url)
    try:
        upgrade_schema(engine)
        gw = Gateway()
        ingestor = Ingestor(engine)
        ingestor.enroll(GATEWAY, SITE, gw.public_pem)
        production_batch(gw, BATCH)
        for sealed in gw.sealed:
            assert ingestor.handle(sealed.wire, SITE, GATEWAY).status == "stored"
    finally:
        engine.dispose()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


QUERIES: dict[str, Callable[[str, Path], list[str]]] = {
    "trace": lambda url, _out: ["trace", BATCH, "--db", url],
    "store gateways": lambda url, _out: ["store", "gateways", "--db", url],
    "store export": lambda url, out: ["store", "export", GATEWAY, "--site", SITE, "--out", str(out), "--db", url],
    "store verify": lambda url, _out: ["store", "verify", "--db", url],
}


def test_queries_read_through_a_read_only_engine_that_refuses_writes(empty_url: str, tmp_path: Path) -> None:
    fill(empty_url)
    engine = open_store_readonly(empty_url)
    try:
        assert trace_batch(engine, BATCH).integrity.verdict == "verified"
        [info] = gateway_overview(engine)
        assert (info.batches, info.missing_batches) == (3, 0)
        assert len(export_batches(engine, SITE, GATEWAY, tmp_path / "out")) == 3
        with pytest.raises(DBAPIError, match=r"read-only|readonly"), engine.begin() as conn:
            conn.execute(text("UPDATE reading_chunks SET n = 0"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", list(QUERIES))
def test_every_query_command_works_for_a_select_only_role(pg_database: str, pg_schema: tuple[str, str],
                                                         command: str, tmp_path: Path) -> None:
    """The role of docs/store.md: CONNECT, USAGE on the schema, SELECT on its tables, nothing else."""
    url, schema = pg_schema
    fill(url)
    role = f"bb_reader_{uuid.uuid4().hex[:8]}"
    database = pg_database.rsplit("/", 1)[1]
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
        try:
            code, out, err = run(*QUERIES[command](pg_url(pg_database, schema, role), tmp_path / "out"))
            assert (code, err) == (0, ""), out
        finally:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", list(QUERIES))
@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("not a url", 2, "is not a database URL"),
        ("mysql://root@localhost/store", 2, "runs on SQLite or PostgreSQL"),
        ("missing sqlite file", 1, "the SQLite file does not exist"),
        ("empty sqlite file", 1, "holds no blackbox store schema"),
        ("nothing listens", 1, "Connection refused"),
        ("empty postgresql", 1, "holds no blackbox store schema"),
        ("older schema", 1, "run `blackbox store migrate`"),
    ],
)
def test_a_query_on_a_store_it_cannot_use_is_one_line_and_creates_nothing(
    command: str, target: str, code: int, message: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    missing = tmp_path / "no" / "such" / "store.sqlite"
    check: Callable[[], None] = lambda: None  # noqa: E731
    if target == "not a url":
        url = "notaurl"
    elif target == "mysql://root@localhost/store":
        url = target
    elif target == "missing sqlite file":
        url = f"sqlite:///{missing}"
    elif target == "empty sqlite file":
        sqlite3.connect(tmp_path / "empty.sqlite").close()
        url = f"sqlite:///{tmp_path / 'empty.sqlite'}"

        def check() -> None:
            with sqlite3.connect(tmp_path / "empty.sqlite") as conn:
                assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    elif target == "nothing listens":
        url = f"postgresql://postgres@127.0.0.1:{closed_port()}/store"
    else:
        url, _schema = request.getfixturevalue("pg_schema")
        if target == "older schema":
            upgrade_schema(url, "0001")
        engine = make_engine(url)

        def check() -> None:
            if target == "older schema":
                assert current_revision(engine) == "0001"
            else:
                assert inspect(engine).get_table_names() == []
            engine.dispose()

    status, out, err = run(*QUERIES[command](url, tmp_path / "out"))
    assert status == code, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not missing.exists() and not missing.parent.exists()
    assert not (tmp_path / "out").exists(), "a refused export wrote its output directory"
    check()


def test_open_store_readonly_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="names no SQLite file") as exc:
        open_store_readonly("sqlite://")
    assert exc.value.exit_code == 2


def test_store_migrate_creates_a_store_that_the_queries_then_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/store.sqlite"
    code, out, err = run("store", "migrate", "--db", url)
    assert (code, err) == (0, "") and "upgraded from None to" in out
    code, out, _ = run("store", "migrate", "--db", url)
    assert code == 0 and "already at" in out
    code, out, err = run("store", "gateways", "--db", url)
    assert (code, out, err) == (0, "", "")


@pytest.mark.parametrize(("url", "code", "message"), [
    ("notaurl", 2, "is not a database URL"),
    ("postgresql://postgres@127.0.0.1:{port}/store", 1, "Connection refused"),
])
def test_store_migrate_on_a_database_it_cannot_reach_is_one_line(url: str, code: int, message: str) -> None:
    status, out, err = run("store", "migrate", "--db", url.format(port=closed_port()))
    assert status == code and "Traceback" not in out + err
    assert len(err.splitlines()) == 1 and message in err, err


CONCURRENT_READS = """
import sys, threading
from sqlalchemy import text
from blackbox.store.db import open_store_readonly

engine = open_store_readonly(sys.argv[1])
failures = []

def read() -> None:
    try:
        for _ in range(15):
            with engine.connect() as conn:
                conn.execute(text("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) "
                                  "SELECT sum(x) FROM c")).one()
    except Exception as exc:
        failures.append(repr(exc))

threads = [threading.Thread(target=read) for _ in range(20)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
print("failures:", failures)
sys.exit(1 if failures or any(t.is_alive() for t in threads) else 0)
"""


def test_the_readonly_sqlite_engine_serves_many_threads_at_once(tmp_path: Path) -> None:
    """The web window answers a batch page's twenty chart requests in twenty threads at once: each thread
    must keep its connection until it returns it (a pool that closed one in use crashed libsqlite3)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/store.sqlite"
    upgrade_schema(url)
    done = subprocess.run([sys.executable, "-c", CONCURRENT_READS, url], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
